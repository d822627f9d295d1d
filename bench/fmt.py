"""How the benchmark report writes its figures."""
from __future__ import annotations


def f(x: float, unit: str = "s") -> str:
    if unit == "ms":
        return f"{x * 1000:.1f} ms"
    return f"{x:.3f} s" if x < 10 else f"{x:.1f} s"


def spread(s: dict, unit: str = "s") -> str:
    return f"{f(s['median'], unit)} ({f(s['min'], unit)}–{f(s['max'], unit)})"


def ratio(x: float, base: float | None) -> str:
    return f"{x / base:.2f}×" if base else "—"


def ms(x: float) -> str:
    return f"{x * 1000:.2f} ms" if x < 0.01 else f"{x * 1000:.1f} ms"
