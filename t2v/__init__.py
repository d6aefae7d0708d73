"""Step-Video-T2V training system: the core library, the floor between the networks (:mod:`model`) and
everything that runs them.

* configuration: :mod:`t2v.config`;
* platform: :mod:`t2v.storage` (file:// and s3://), :mod:`t2v.tracking` (MLflow), :mod:`t2v.registry`
  (model versions, aliases, promotion), :mod:`t2v.launch` (torchrun / TrainJob), :mod:`t2v.images`,
  :mod:`t2v.errors`, :mod:`t2v.progress`;
* model I/O: :mod:`t2v.checkpoints` (the released layout), :mod:`t2v.text_encoders`, :mod:`t2v.shards`
  (clip and latent shards), :mod:`t2v.video` (mp4), :mod:`t2v.generate` (text in, video out);
* the embedded default: :mod:`t2v.world` (the synthetic video world, its checker, tiny text encoders).

It imports :mod:`model` and never a trainer, component, pipeline or the CLI (``docs/ARCHITECTURE.md``).
"""

__version__ = "0.1.0"
