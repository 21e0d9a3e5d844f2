"""``model.summary()``: layers, output shapes and parameter counts, as Keras prints them."""

from __future__ import annotations


def summary(model, print_fn=print) -> None:
    """Print each layer's name, type, output shape and parameter count, then the totals."""
    rows = [("Layer (type)", "Output Shape", "Param #")]
    shape = model.input_shape[1:] if model.input_shape is not None else None
    for layer in model.layers:
        shape = layer.compute_output_shape(shape) if shape is not None else None
        out = "?" if shape is None else str((None, *shape))
        count = f"{layer.count_params():,}" if layer.built else "0 (unbuilt)"
        rows.append((f"{layer.name} ({type(layer).__name__})", out, count))
    widths = [max(len(r[i]) for r in rows) + 2 for i in range(3)]

    def line(left, mid, right, fill):
        return left + mid.join(fill * w for w in widths) + right

    def row(cells):
        a, b, c = cells
        return f"│ {a:<{widths[0] - 2}} │ {b:<{widths[1] - 2}} │ {c:>{widths[2] - 2}} │"

    total = model.count_params()
    print_fn(f'Model: "{model.name}"')
    print_fn(line("┌", "┬", "┐", "─"))
    print_fn(row(rows[0]))
    print_fn(line("├", "┼", "┤", "─"))
    for r in rows[1:]:
        print_fn(row(r))
    print_fn(line("└", "┴", "┘", "─"))
    size = sum(w.nbytes for w in model.weights)
    print_fn(f" Total params: {total:,} ({_bytes(size)})")
    print_fn(f" Trainable params: {total:,} ({_bytes(size)})")
    print_fn(" Non-trainable params: 0 (0.00 B)")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    return ""
