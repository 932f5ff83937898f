"""`onnx-dc` command line: a thin layer over the public Python API (the names `onnx_dc` exports)."""
from __future__ import annotations

import json
import os
import sys
import time

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from . import (
    DEFAULT_BITS, DEFAULT_INDEX_BITS, DEFAULT_SPARSITY, KIND_LABELS, OUTPUT_FITS, PRUNE_METHODS, QUANTIZERS,
    REPORT_COLUMNS, CompressOptions, ConfigError, DatasetError, ModelError, NothingToCompress, PayloadError,
    candidate_prune_method, index_bits_value, parse_kinds, parse_layer_overrides, parse_per_kind, plot_layers,
    plot_sensitivity, sensitivity_rows, sparsity_value, table_rows, weight_bits_value,
)
from . import compress as api_compress
from . import decompress as api_decompress
from . import evaluate as api_evaluate
from . import report as api_report
from . import sensitivity as api_sensitivity

USER_ERRORS = (ModelError, ConfigError, PayloadError, DatasetError)


def _console(stderr: bool = False):
    # Off a terminal (pipes, CI logs) rich would wrap the table at 80 columns; give it room instead.
    return Console(stderr=stderr, width=None if sys.stdout.isatty() else 200, highlight=False)


def _fail(message: str, code: int = 1):
    click.echo(f"onnx-dc: error: {message}", err=True)
    sys.exit(code)


def _run(fn):
    """Run a command body: user errors become one line on stderr and a non-zero exit, never a traceback."""
    try:
        return fn()
    except USER_ERRORS as exc:
        _fail(str(exc))
    except NothingToCompress as exc:
        _fail(f"{exc}; use --allow-unchanged to write the model anyway", 3)
    except KeyboardInterrupt:
        _fail("interrupted; no output was written", 130)
    except Exception as exc:  # noqa: BLE001 - the last line of defence of a CLI
        if os.environ.get("ONNX_DC_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set ONNX_DC_DEBUG=1 for a traceback)", 4)


def print_report(data: dict) -> None:
    console = _console()
    table = Table(title="Deep Compression report (P: pruning, Q: quantization, H: Huffman coding)")
    for col in REPORT_COLUMNS:
        table.add_column(col, justify="left" if col in ("Layer", "Op", "Shape") else "right")
    rows, total = table_rows(data)
    for row in rows:
        table.add_row(*row)
    table.add_section()
    table.add_row(*total)
    console.print(table)
    t = data["totals"]
    if t["fillers"]:
        console.print(f"Filler entries: {t['fillers']:,}, costing {t['filler_bits'] / 8:,.0f} bytes of index stream "
                      f"({100 * t['filler_bits'] / max(8 * t['payload_bytes'], 1):.1f}% of the payloads).")
    f = data["file"]
    if f.get("original_bytes") and f.get("compressed_bytes"):
        console.print(f"File size: {f['original_bytes']:,} B → {f['compressed_bytes']:,} B "
                      f"([bold]{f['ratio']:.1f}x smaller[/bold], .onnx plus external data, bytes on disk)")
    elif f.get("compressed_bytes"):
        console.print(f"File size: {f['compressed_bytes']:,} B")
    by_kind = data["totals"].get("by_kind") or {}
    if len(by_kind) > 1 or any(k != "fc" for k in by_kind):
        kinds = Table(title="By kind of tensor")
        for col in ("Kind", "Tensors", "Original", "Payloads", "Ratio", "Run sparse"):
            kinds.add_column(col, justify="left" if col == "Kind" else "right")
        for kind, k in by_kind.items():
            kinds.add_row(KIND_LABELS[kind], str(k["tensors"]), f"{k['original_bytes']:,} B", f"{k['payload_bytes']:,} B",
                          _ratio(k["ratio"]), f"{k['executed_sparse']}/{k['tensors']}")
        console.print(kinds)
    for layer in data["layers"]:
        if layer.get("kind") in ("conv", "other") and layer.get("exec_reason"):
            console.print(f"{layer['name']} ({layer['op']}): run {layer['execution']}: {layer['exec_reason']}")
    for s in data["skipped"]:
        console.print(f"Left alone: {s['name']} ({s['op']}): {s['reason']}")


def _ratio(x) -> str:
    return "—" if x is None else f"{x:.1f}x"


def print_policy(policy: dict) -> None:
    table = Table(title="Per-layer settings chosen for --target-ratio (from the sensitivity analysis)")
    for col in ("Layer", "Kept", "Bits", "Estimated payload", "Output error alone", "Top-1 agreement alone"):
        table.add_column(col, justify="left" if col == "Layer" else "right")
    for name, p in policy.items():
        table.add_row(name, f"{1 - p.sparsity:.0%}", str(p.bits), f"{p.payload_bytes:,} B", f"{p.output_error:.2e}",
                      f"{p.agreement:.2%}")
    _console().print(table)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="onnx-dc", prog_name="onnx-dc")
def main():
    """Deep Compression for ONNX models: prune, quantize (k-means weight sharing) and Huffman-code the
    weights of fully-connected and convolution layers into a smaller model that onnxruntime runs with the
    onnx-dc custom-op library."""


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path(dir_okay=True))
@click.option("-o", "--output", "output_path", required=True, type=click.Path(), help="Compressed model to write.")
@click.option("--sparsity", default="fc=0.9,conv=0.5,emb=0.5,other=0", show_default=True,
              help="Pruned fraction S in [0,1) (0.92 keeps 8%), or per kind: fc=S,conv=S,emb=S,other=S (kinds "
                   "left out keep their default).")
@click.option("--layer-sparsity", multiple=True, metavar="NAME=S",
              help="Per-layer pruned fraction; NAME is a weight initializer or a node name. Repeatable.")
@click.option("--bits", default="fc=5,conv=8,emb=8,other=8", show_default=True,
              help="Codebook bits (k = 2^B shared weights), 1..8, or per kind as for --sparsity.")
@click.option("--layer-bits", multiple=True, metavar="NAME=B", help="Per-layer codebook bits. Repeatable.")
@click.option("--index-bits", default="fc=5,conv=8,emb=4,other=4", show_default=True,
              help="Bits of a relative index, 1..16 (wider gaps get filler entries), or per kind as for --sparsity.")
@click.option("--kinds", default="fc,conv,emb,other", show_default=True,
              help="Which tensors to compress: fc (Gemm/MatMul weights), conv (Conv kernels), emb (Gather "
                   "tables), other (any other float constant of at least --min-weights elements, decoded once "
                   "per session).")
@click.option("--conv-exec", default="auto", show_default=True, type=click.Choice(["auto", "sparse", "dense"]),
              help="Conv layers: run the sparse kernel (DCSparseConv), decode once and run onnxruntime's Conv, "
                   "or measure both per layer and keep the faster.")
@click.option("--init", default="linear", show_default=True, type=click.Choice(["linear", "density", "random", "kmeans++"]),
              help="k-means initialisation.")
@click.option("--no-huffman", is_flag=True, help="Store fixed-width codes instead of Huffman codes.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for random initialisations.")
@click.option("--min-weights", default=256, show_default=True, type=int, help="Leave smaller layers alone.")
@click.option("--allow-unchanged", is_flag=True, help="Write the model even if no layer can be compressed.")
@click.option("--calibration", type=click.Path(), metavar="NPZ",
              help="Input samples (arrays named after the model's inputs): fit each layer to reproduce the "
                   "original's output (pruning with reconstruction, codebook and bias refit).")
@click.option("--prune-method", default="obs", show_default=True,
              type=click.Choice(PRUNE_METHODS),
              help="With --calibration: how to choose the pruned weights.")
@click.option("--quantizer", default="gptq", show_default=True, type=click.Choice(QUANTIZERS),
              help="With --calibration: gptq assigns shared values one weight at a time with error feedback and "
                   "a price on code length; kmeans clusters, then refits the shared values by least squares.")
@click.option("--output-fit", default="mse", show_default=True, type=click.Choice(OUTPUT_FITS),
              help="With --calibration, for a layer whose output is a model output: mse reproduces its values; "
                   "kl (classifiers: the output is logits) reproduces the original's predicted distribution.")
@click.option("--target-ratio", type=float, metavar="R",
              help="With --calibration: choose per-layer sparsity and bits to make the file R times smaller "
                   "at the least output error (overrides --sparsity/--bits).")
@click.option("--sensitivity", "sensitivity_path", type=click.Path(), metavar="FILE",
              help="With --target-ratio: reuse this saved analysis (onnx-dc sensitivity --save) instead of "
                   "measuring it again; refused if it was made for another model, data or settings.")
@click.option("-j", "--jobs", default=1, show_default=True, type=int,
              help="Worker processes for the data-free layers and for --target-ratio's sensitivity analysis (the "
                   "output is the same).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def compress(input_path, output_path, sparsity, layer_sparsity, bits, layer_bits, index_bits, init, no_huffman, seed,
             kinds, conv_exec, min_weights, allow_unchanged, calibration, prune_method, quantizer, output_fit,
             target_ratio, sensitivity_path, jobs, as_json, quiet):
    """Compress the model INPUT into OUTPUT and print the report."""

    def body():

        options = CompressOptions(
            sparsity=parse_per_kind(sparsity, "--sparsity", sparsity_value, DEFAULT_SPARSITY),
            bits=parse_per_kind(bits, "--bits", weight_bits_value, DEFAULT_BITS),
            index_bits=parse_per_kind(index_bits, "--index-bits", index_bits_value, DEFAULT_INDEX_BITS),
            kinds=parse_kinds(kinds), conv_exec=conv_exec,
            layer_sparsity=parse_layer_overrides(layer_sparsity, "--layer-sparsity", sparsity_value),
            layer_bits=parse_layer_overrides(layer_bits, "--layer-bits", weight_bits_value),
            init=init, huffman=not no_huffman, seed=seed, min_weights=min_weights, allow_unchanged=allow_unchanged,
            calibration=calibration, prune_method=prune_method, quantizer=quantizer, output_fit=output_fit,
            target_ratio=target_ratio, sensitivity=sensitivity_path, jobs=jobs,
        )
        result = _with_progress(lambda progress: api_compress(input_path, output_path, options, progress=progress),
                                "compressing", quiet, bar=not as_json)
        if as_json:
            click.echo(json.dumps(result.report))
        else:
            if result.policy:
                print_policy(result.policy)
            print_report(result.report)
            click.echo(f"Wrote {result.output}")

    _run(body)


@main.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("-o", "--output", "output_path", required=True, type=click.Path(), help="Dense model to write.")
def decompress(input_path, output_path):
    """Turn a compressed model back into a standard ONNX model (pruned, quantized dense weights)."""

    def body():

        click.echo(f"Wrote {api_decompress(input_path, output_path)}")

    _run(body)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout instead of the table.")
def report(model_path, as_json):
    """Print the compression report of a compressed model."""

    def body():

        data = api_report(model_path)
        if not data["layers"]:
            raise ModelError(f"{model_path}: has no onnx-dc compressed layer")
        if as_json:
            click.echo(json.dumps(data))
        else:
            print_report(data)

    _run(body)


PLAIN_PROGRESS_SECONDS = 30.0


def _with_progress(fn, label: str, quiet: bool, bar: bool = True):
    """Run fn(progress) under a progress bar on a terminal; elsewhere (a log, a pipe, CI; or bar=False) with
    a plain line on stderr every PLAIN_PROGRESS_SECONDS, so that a long run in a log still shows that it
    moves and how far it is; nothing with `quiet`."""
    if quiet:
        return fn(None)
    if not (bar and sys.stderr.isatty()):

        start = last = time.monotonic()

        def plain(name, done, total):
            nonlocal last
            now = time.monotonic()
            if now - last >= PLAIN_PROGRESS_SECONDS and done < total:
                last = now
                click.echo(f"{label}: {done}/{total} {name} ({now - start:.0f} s)", err=True)

        return fn(plain)

    with Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=_console(stderr=True), transient=True) as bar:
        task = bar.add_task("", total=None)
        return fn(lambda name, done, total: bar.update(task, completed=done, total=total, description=name))


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--calibration", required=True, type=click.Path(), metavar="NPZ",
              help="Input samples (arrays named after the model's inputs), used to fit each candidate.")
@click.option("--data", metavar="NPZ|fashion-mnist", help="Evaluate on these inputs (with 'labels': accuracy) "
              "instead of the calibration data.")
@click.option("--sparsities", default=None, metavar="S,S,…", help="Pruned fractions to try (default 0 to 0.98).")
@click.option("--data-free", is_flag=True, help="Compress candidates by magnitude + k-means, without refits.")
@click.option("--prune-method", default="obs", show_default=True,
              type=click.Choice(PRUNE_METHODS),
              help="As compress --prune-method (candidates use its fast one-shot variant).")
@click.option("--quantizer", default="gptq", show_default=True, type=click.Choice(QUANTIZERS),
              help="As compress --quantizer.")
@click.option("--output-fit", default="mse", show_default=True, type=click.Choice(OUTPUT_FITS),
              help="As compress --output-fit: how the output layer's candidates are fitted.")
@click.option("-j", "--jobs", default=1, show_default=True, type=int,
              help="Fit and run the candidates in this many worker processes (the result is the same).")
@click.option("--save", "save_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the analysis to FILE, for compress --target-ratio R --sensitivity FILE (with the "
                   "same --calibration and settings).")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False), help="Write the sensitivity plot (PNG).")
@click.option("--json", "as_json", is_flag=True, help="Print all points as one JSON object on stdout.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display.")
def sensitivity(model_path, calibration, data, sparsities, data_free, prune_method, quantizer, output_fit, jobs,
                save_path, plot_path, as_json, quiet):
    """How the model's output degrades as each layer alone is pruned harder (and quantized coarser)."""

    def body():

        grid = None
        if sparsities:
            grid = tuple(sparsity_value(x.strip(), "--sparsities") for x in sparsities.split(","))
        options = CompressOptions(prune_method=prune_method, quantizer=quantizer, output_fit=output_fit, jobs=jobs)
        sens = _with_progress(lambda progress: api_sensitivity(model_path, calibration, data, options, grid, progress,
                                                               data_aware=not data_free, save=save_path),
                              "analysing", quiet)
        default_bits = {"fc": int(options.bits.fc), "conv": int(options.bits.conv)}
        if plot_path:
            plot_sensitivity(sens, plot_path, default_bits)
        if save_path and not as_json:

            # What compress must be given for the analysis to match (calibration.saved.analysis_settings).
            extra = "".join(f" {flag} {value}" for flag, value, differs in (
                ("--output-fit", output_fit, output_fit != "mse"), ("--quantizer", quantizer, quantizer != "gptq"),
                ("--prune-method", "magnitude", candidate_prune_method(prune_method) == "magnitude")) if differs)
            click.echo(f"Wrote {save_path} (reuse it: onnx-dc compress {model_path} -o OUT --calibration {calibration} "
                       f"--target-ratio R --sensitivity {save_path}{extra})", err=True)
        if as_json:
            click.echo(json.dumps({"points": sensitivity_rows(sens)}))
            return

        has_acc = any(p.accuracy is not None for s in sens for p in s.points)
        table = Table(title="Sensitivity: each layer compressed alone (error: relative output error; "
                            f"{'accuracy' if has_acc else 'agreement: top-1 agreement with the original'})")
        bit_cols = sorted({p.bits for s in sens for p in s.points})
        table.add_column("Layer")
        table.add_column("Kept", justify="right")
        for b in bit_cols:
            table.add_column(f"{b}-bit error", justify="right")
        table.add_column("accuracy" if has_acc else "agreement", justify="right")
        for s in sens:
            by = {(p.sparsity, p.bits): p for p in s.points}
            for sp in sorted({p.sparsity for p in s.points}):
                ref = by.get((sp, default_bits[s.kind])) or next(p for p in s.points if p.sparsity == sp)
                table.add_row(s.name, f"{1 - sp:.0%}",
                              *[f"{by[(sp, b)].output_error:.2e}" if (sp, b) in by else "" for b in bit_cols],
                              f"{100 * (ref.accuracy if has_acc else ref.agreement):.2f}%")
            table.add_section()
        _console().print(table)
        if plot_path:
            click.echo(f"Wrote {plot_path}")

    _run(body)


@main.command("eval")
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("--data", required=True, metavar="NPZ|fashion-mnist",
              help="An .npz with arrays named after the model's inputs (and optionally 'labels'), or a data set "
                   "shortcut for the bundled models: fashion-mnist (test split) or fashion-mnist:train.")
@click.option("--reference", "reference_path", type=click.Path(), help="Compare outputs with this (original) model.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object on stdout.")
def eval_command(model_path, data, reference_path, threads, as_json):
    """Top-1 accuracy of MODEL on data and, with --reference, agreement and output differences."""

    def body():

        metrics = api_evaluate(model_path, data, reference_path, threads)
        if as_json:
            click.echo(json.dumps(metrics))
            return

        console = _console()
        console.print(f"{model_path} on {data} ({metrics['samples']:,} samples)")
        table = Table()
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, label, fmt in (("accuracy", "top-1 accuracy", "{:.2%}"),
                                ("reference_accuracy", "reference top-1 accuracy", "{:.2%}"),
                                ("agreement", "top-1 agreement with reference", "{:.2%}"),
                                ("max_abs_diff", "max abs output difference", "{:.3g}"),
                                ("mean_abs_diff", "mean abs output difference", "{:.3g}"),
                                ("cosine_similarity", "cosine similarity", "{:.6f}")):
            if key in metrics:
                table.add_row(label, fmt.format(metrics[key]))
        console.print(table)

    _run(body)


@main.command()
@click.argument("model_path", metavar="MODEL", type=click.Path())
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False), help="Folder for the PNGs.")
@click.option("--original", "original_path", type=click.Path(), help="The uncompressed model, to plot the weights before quantization.")
def plots(model_path, output_dir, original_path):
    """Per compressed layer: weight distribution and codebook, cluster-index and relative-index distributions."""

    def body():

        for path in plot_layers(model_path, output_dir, original_path):
            click.echo(f"Wrote {path}")

    _run(body)


if __name__ == "__main__":
    main()
