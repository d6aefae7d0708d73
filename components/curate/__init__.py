"""The curate stage: raw videos -> scene-cut, scored, captioned clips in webdataset shards, a per-clip
manifest with every score and drop reason, and an HTML report.

* :mod:`components.curate.stage`           -- the curation logic on local folders (a shard, the merge);
* :mod:`components.curate.filters`         -- the per-clip scores and drop reasons (pixels only);
* :mod:`components.curate.report`          -- the HTML report, and each filter's precision/recall against
  the synthetic world's planted truth;
* :mod:`components.curate.component_stage` -- the two stages the pipeline runs (curate-shard, curate);
* :mod:`components.curate.component`       -- their KFP components.

Its settings are :class:`t2v.config.curate.CurateConfig`.
"""
