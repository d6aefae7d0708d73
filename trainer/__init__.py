"""The trainer: the processes ``torchrun`` (locally) or a Kubeflow Trainer TrainJob (on the cluster)
starts, one per GPU or CPU slot. It imports :mod:`model` and the core library (:mod:`t2v`), never a
component: a training component writes a job file and launches ``python -m trainer.train --job URI``.

Laid out as torchtitan lays out a trainer, one concern a module:

* :mod:`trainer.train`            -- the :class:`~trainer.train.Trainer`: build steps and the loop
* :mod:`trainer.parallel`         -- process group, device mesh, FSDP2 / DDP, activation checkpointing
* :mod:`trainer.sequence_parallel`-- Ulysses sequence parallel over the DiT's 3D full attention
* :mod:`trainer.objectives`       -- what a batch's loss is (flow matching; Video-DPO goes here)
* :mod:`trainer.data`             -- rank-independent, resumable batches of latents
* :mod:`trainer.optim`            -- AdamW, warmup + constant / cosine schedule, EMA
* :mod:`trainer.checkpoint`       -- resumable state with torch.distributed.checkpoint (file or S3)
* :mod:`trainer.metrics`          -- reduced step metrics, MFU, MLflow logging
* :mod:`trainer.planner`          -- memory and time of a configuration before any GPU is asked for
"""
