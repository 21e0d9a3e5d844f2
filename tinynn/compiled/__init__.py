"""The compiled room: the same contracts as the textbook, implemented with Numba.

Everything in tinynn that needs Numba lives here, and only here:

* ``jit``: the one set of Numba options every kernel compiles with;
* ``loops``, ``updates``: the loop kernels (activations, products, losses, dropout; the
  optimizers' updates);
* ``kernels``: the compiled twins of ``tinynn.reference`` (same names, same results),
  built from those loops;
* ``table``: the table of built-ins, each built-in part and its compiled form;
* ``fused``: whole training steps in one compiled call, from the same loops, in the
  buffers of ``workspace``; ``users`` calls a user's layer back from them;
* ``inference``: the forward pass of ``predict`` and ``evaluate``, on the same ops;
* ``engine``: lowers a model of built-in parts to ``fused``'s ops and runs it;
* ``sync``: the spin barrier the training threads meet at;
* ``cache``: where compiled code is kept on disk, stamped by this package's sources.

The textbook room never imports this package; ``tinynn.backend`` does, on first use,
so ``import tinynn`` compiles nothing and imports no Numba.
"""
