"""Sparse structure as relative indices with filler entries (docs/FORMAT.md, "Sparse structure")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RelativeIndex:
    row_nnz: np.ndarray  # int64 [rows]: real entries per row
    row_symbols: np.ndarray  # int64 [rows]: symbols per row, fillers included
    symbols: np.ndarray  # uint16 [nnz + fillers]: relative-index symbols, fillers included, rows in order

    @property
    def fillers(self) -> int:
        return int(self.symbols.size - self.row_nnz.sum())


def filler_symbol(index_bits: int) -> int:
    return (1 << index_bits) - 1


_ROWS_PER_BLOCK_ELEMENTS = 1 << 22  # rows are encoded in blocks of about this many matrix elements


def encode_relative(mask: np.ndarray, index_bits: int) -> RelativeIndex:
    """Relative-index symbols of a 2-D boolean mask, row by row (row-major entry order). Works through
    blocks of rows so that the temporaries stay small for large layers."""
    if not 1 <= index_bits <= 16:
        raise ValueError(f"index bits must be in 1..16, got {index_bits}")
    rows, cols = mask.shape
    f = filler_symbol(index_bits)
    row_nnz = np.zeros(rows, dtype=np.int64)
    row_symbols = np.zeros(rows, dtype=np.int64)
    parts = []
    step = max(1, _ROWS_PER_BLOCK_ELEMENTS // max(cols, 1))
    for r0 in range(0, rows, step):
        r, c = np.nonzero(mask[r0 : r0 + step])  # row-major order within the block
        prev = np.zeros(c.size, dtype=np.int64)
        if c.size > 1:
            prev[1:] = np.where(r[1:] == r[:-1], c[:-1] + 1, 0)
        gap = c - prev
        n_fill = gap // f
        ends = np.cumsum(n_fill + 1)  # each entry: its fillers, then its own symbol
        symbols = np.full(int(ends[-1]) if ends.size else 0, f, dtype=np.uint16)
        symbols[ends - 1] = gap % f
        parts.append(symbols)
        block_rows = min(step, rows - r0)
        row_nnz[r0 : r0 + block_rows] = np.bincount(r, minlength=block_rows)
        row_symbols[r0 : r0 + block_rows] = np.bincount(r, weights=n_fill + 1, minlength=block_rows).astype(np.int64)
    symbols = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)
    return RelativeIndex(row_nnz, row_symbols, symbols)


def decode_relative(symbols: np.ndarray, row_nnz: np.ndarray, index_bits: int, cols: int) -> np.ndarray:
    """Absolute column of each real entry, from the symbols of consecutive rows with `row_nnz` entries.

    Raises ValueError if a column falls outside the matrix or the symbols do not match the counts.
    """
    symbols = np.asarray(symbols, dtype=np.int64)
    row_nnz = np.asarray(row_nnz, dtype=np.int64)
    f = filler_symbol(index_bits)
    real = symbols != f
    nnz = int(row_nnz.sum())
    if int(real.sum()) != nnz:
        raise ValueError("relative-index symbols do not match the row counts")
    if nnz == 0:
        if symbols.size:
            raise ValueError("filler symbols without entries")
        return np.zeros(0, dtype=np.int64)
    real_pos = np.flatnonzero(real)
    if real_pos[-1] != symbols.size - 1:
        raise ValueError("the relative indices end in a filler")
    # Each symbol advances the cursor: a filler by F, a real entry by its symbol + 1.
    step = np.where(real, symbols + 1, f)
    cum = np.cumsum(step)
    # A row's cursor starts from the cumulative advance before its first symbol, which is the symbol
    # right after the previous row's last real entry.
    rows_with = np.flatnonzero(row_nnz)
    last_real_of_row = real_pos[np.cumsum(row_nnz[rows_with]) - 1]
    row_first_sym = np.concatenate([[0], last_real_of_row[:-1] + 1])
    base = np.concatenate([[0], cum])[row_first_sym]
    entry_base = np.repeat(base, row_nnz[rows_with])
    columns = cum[real_pos] - 1 - entry_base
    if columns.size and int(columns.max()) >= cols:
        raise ValueError(f"a column index reaches {int(columns.max())}, beyond the matrix's {cols} columns")
    return columns
