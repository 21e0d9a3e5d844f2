"""The math of tinynn, twice: ``reference`` (NumPy, the textbook) and ``compiled`` (Numba).

Both modules define the same functions under the same names; ``tinynn.backend``
chooses which one the layers, losses and optimizers call.
"""
