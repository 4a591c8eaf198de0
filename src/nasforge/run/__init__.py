"""A search run, one module per stage, in the order a run goes through them.

- :mod:`~nasforge.run.api`: ``search``, ``resume`` and one session of a run
  (``nasforge.search`` and ``nasforge.resume`` are these);
- :mod:`~nasforge.run.setup`: the space, strategy, estimator and dataset, built from
  arguments or rebuilt from a stored config;
- :mod:`~nasforge.run.budget` and :mod:`~nasforge.run.plan`: a time budget split into
  search, final training and export, and that plan hooked into the components;
- :mod:`~nasforge.run.loop`: the ask -> evaluate -> tell loop (``Run``), every step stored
  first, with callbacks for what its other users (benchmarks, one-shot search) keep;
- :mod:`~nasforge.run.stores`: the ``Store`` protocol the loop writes to, and
  ``MemoryStore``, which keeps a run in memory (the file store is :mod:`nasforge.store`);
- :mod:`~nasforge.run.display`: the progress bar, phase lines and summary table;
- :mod:`~nasforge.run.finalize`: the returned model chosen, retrained, tested, exported,
  and the Pareto report.

``setup``, ``budget``, ``display`` and ``stores`` import no other module of this package;
``plan``, ``loop`` and ``finalize`` import only ``setup``, ``display`` and ``stores``
(``budget`` lazily, inside functions); ``api`` imports them all and no module here imports
``api``. This ``__init__`` imports nothing, so ``import nasforge.run.budget`` stays light.
"""
