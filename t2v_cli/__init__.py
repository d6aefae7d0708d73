"""The ``t2v`` command line, the top floor: it may import every floor below (pipelines, components, the
trainer, the core library, the networks); nothing imports it. See :mod:`t2v_cli.main`."""
