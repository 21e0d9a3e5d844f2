"""The compiled room: the same contracts as the textbook, implemented with Numba.

Everything in tinynn that needs Numba lives here, and only here:

* ``kernels``: the compiled twins of ``tinynn.reference`` (same names, same results),
  built from small loop kernels;
* ``fused``: whole training steps in one compiled call, from those loop kernels;
* ``engine``: lowers a model of built-in parts to ``fused``'s ops and runs it;
* ``sync``: the spin barrier the training threads meet at;
* ``cache``: where compiled code is kept on disk, stamped by this package's sources.

The textbook room never imports this package; ``tinynn.backend`` does, on first use,
so ``import tinynn`` compiles nothing and imports no Numba.
"""
