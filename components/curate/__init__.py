"""The curate stage: raw videos -> scene-cut, scored, captioned clips in webdataset shards, a per-clip
manifest with every score and drop reason, and an HTML report.

* :mod:`components.curate.stage`           -- the curation logic (a shard, the merge);
* :mod:`components.curate.inputs`          -- the input table (JSONL/CSV/parquet), streamed, hash-sharded;
* :mod:`components.curate.video_pass`      -- one video streamed scene by scene (bounded memory);
* :mod:`components.curate.filters`         -- the per-clip classical scores and drop reasons (pixels only);
* :mod:`components.curate.models`          -- OCR and NSFW detectors, aesthetic/CLIP/VLM/RAFT plugins;
* :mod:`components.curate.dedup`           -- near-duplicates through a faiss index, k-means cluster caps;
* :mod:`components.curate.report`          -- the HTML report, and each filter's precision/recall against
  the synthetic world's planted truth;
* :mod:`components.curate.component_stage` -- the two stages the pipeline runs (curate-shard, curate);
* :mod:`components.curate.component`       -- their KFP components.

Its settings are :class:`t2v.config.curate.CurateConfig`.
"""
