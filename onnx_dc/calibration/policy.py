"""The automatic per-layer policy: from a sensitivity analysis, the sparsity and bits of each layer that meet
a byte budget at the least total output error (a Lagrangian choice over the layers: errors of different
layers add up, roughly), and the search that builds files until one meets the target ratio."""
from __future__ import annotations

import dataclasses
from typing import Callable

from ..config import CompressOptions, ConfigError
from .sensitivity import LayerSensitivity, Point

MAX_TRIES = 16  # files built by the ratio search at most
REFINE_TRIES = 8  # after this many, a result that fits is kept


def choose_policy(sens: list[LayerSensitivity], budget_bytes: float) -> dict[str, Point]:
    """Per layer, the point minimising the total output error with the payloads' total within budget
    (Lagrangian relaxation: for a price λ per byte each layer picks argmin error + λ·bytes; λ is bisected
    to the smallest price that fits; then the budget it leaves is spent greedily, see _fill_budget).
    Raises ConfigError if even the smallest payloads do not fit."""
    def pick(lam):
        return {s.name: min(s.points, key=lambda p: (p.output_error + lam * p.payload_bytes, p.payload_bytes))
                for s in sens}

    smallest = sum(min(p.payload_bytes for p in s.points) for s in sens)
    if smallest > budget_bytes:
        raise ConfigError(f"--target-ratio: even the smallest settings tried need {smallest:,} bytes of payload, "
                          f"the target allows {int(budget_bytes):,}")
    lo, hi = 0.0, 1.0
    while sum(p.payload_bytes for p in pick(hi).values()) > budget_bytes:
        hi *= 4
    for _ in range(60):
        mid = (lo + hi) / 2
        if sum(p.payload_bytes for p in pick(mid).values()) > budget_bytes:
            lo = mid
        else:
            hi = mid
    return _fill_budget(sens, pick(hi), budget_bytes)


def _fill_budget(sens: list[LayerSensitivity], chosen: dict[str, Point], budget_bytes: float) -> dict[str, Point]:
    """The price λ only reaches each layer's lower convex hull of (bytes, error): between two prices the
    total jumps past the budget, and the fitting side can leave much of it unused (LeNet-5 asked for 35x
    got 40x). Spend what is left: repeatedly take the move of one layer to a point of less error that
    removes the most error per added byte and keeps the total within budget (a move that also saves bytes
    is taken first). Every move lowers the total error, so this ends."""
    chosen = dict(chosen)
    total = sum(p.payload_bytes for p in chosen.values())
    while True:
        best, best_key = None, None
        for s in sens:
            current = chosen[s.name]
            for p in s.points:
                gain = current.output_error - p.output_error
                extra = p.payload_bytes - current.payload_bytes
                if gain <= 0 or total + extra > budget_bytes:
                    continue
                key = (extra <= 0, gain / max(extra, 1))
                if best_key is None or key > best_key:
                    best, best_key = (s.name, p, extra), key
        if best is None:
            return chosen
        name, point, extra = best
        chosen[name] = point
        total += extra


def policy_options(options: CompressOptions, chosen: dict[str, Point]) -> CompressOptions:
    """The options with each layer's chosen sparsity and bits as per-layer overrides."""
    return dataclasses.replace(options, layer_sparsity={**options.layer_sparsity, **{k: p.sparsity for k, p in chosen.items()}},
                               layer_bits={**options.layer_bits, **{k: p.bits for k, p in chosen.items()}})


def search_ratio(sens: list[LayerSensitivity], budget: float, target_bytes: float, target_ratio: float,
                 original_bytes: int, build: Callable[[dict[str, Point]], tuple]) -> tuple:
    """(model, skipped, chosen): the policy whose built file (`build(chosen)` → (model, skipped)) is at most
    `target_bytes` and closest to it. `budget`: the first guess of the bytes the tuned payloads may take;
    each try corrects it by how far the built file missed."""
    best = None
    passed = failed = None  # the largest budget known to fit the target, the smallest known not to
    for attempt in range(MAX_TRIES):
        if attempt >= REFINE_TRIES and best is not None:
            break  # eight tries refine a result that fits; up to eight more look for one that fits at all
        chosen = choose_policy(sens, budget)
        new_model, all_skipped = build(chosen)
        size = new_model.ByteSize()
        if size <= target_bytes:
            passed = budget if passed is None else max(passed, budget)
            if best is None or size > best[0].ByteSize():
                best = (new_model, all_skipped, chosen)
        else:
            failed = budget if failed is None else min(failed, budget)
        if best is not None and target_bytes - best[0].ByteSize() <= 0.02 * target_bytes:
            break  # fits, and within 2% of the target: close enough (a miss just above it is not)
        # The estimates (one-shot sensitivity payloads, fixed overhead) missed by this much: aim the next
        # policy's estimated payloads at the target corrected by the miss (from the estimate, not from the
        # budget: a policy can sit well below its budget, and moving the budget by the miss alone may never
        # change it), but stay between what is known to pass and what is known to fail.
        budget = sum(p.payload_bytes for p in chosen.values()) - (size - target_bytes)
        if failed is not None and budget >= failed:
            budget = (passed + failed) / 2 if passed is not None else 0.9 * failed
        if passed is not None and budget <= passed:
            budget = (passed + failed) / 2 if failed is not None else 1.1 * passed
    if best is None:
        raise ConfigError(f"--target-ratio {target_ratio:g}: reached only "
                          f"{original_bytes / new_model.ByteSize():.1f}x with the settings tried")
    return best
