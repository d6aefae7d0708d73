"""The stage framework: what every stage shares, below the stage folders.

* :mod:`~components.framework.context`   -- :class:`StageContext`, built from the pipeline parameters;
* :mod:`~components.framework.manifests` -- the hand-off manifest, fingerprints, KFP artifact files;
* :mod:`~components.framework.skeleton`  -- :class:`Stage` and the one skeleton every stage runs in;
* :mod:`~components.framework.catalog`   -- the one list of stages, in pipeline order.

:mod:`components.runtime` (the body of every KFP component) is the framework's entry point from KFP.
"""
