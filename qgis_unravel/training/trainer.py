"""The training loop: Oriented R-CNN losses, AdamW with warm-up and step decay, gradient
clipping, optional CUDA mixed precision, regular mmrotate-format checkpoints, exact resume, and
the same loop on several processes (``distributed.py``).

Every random choice of iteration ``i`` (data order, augmentation, sampling, drop-path) is
seeded from ``(seed, i)``, so a resumed run continues exactly as an uninterrupted one would.
Augmentation and sampling of the ``k``-th image of a global batch are seeded from
``(seed, i, k)``, so they do not depend on which process handles the image.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from .dataset import collate
from .distributed import DistContext, peak_memory_mb, rss_mb, wrap
from .progress import ProgressBar
from .proposals import training_proposals
from .schedule import StepSchedule, default_steps
from .targets import rcnn_loss, rpn_loss, sample_rois

LOSS_KEYS = ("loss_rpn_cls", "loss_rpn_bbox", "loss_cls", "loss_bbox")


@dataclass
class TrainConfig:
    """Optimiser and loop settings (defaults: the UnravelNet configs' AdamW schedule)."""

    iterations: int = 1000
    batch_size: int = 2
    lr: float = 1.5e-4
    weight_decay: float = 0.05
    warmup_iters: int = 500
    warmup_ratio: float = 1.0 / 3.0
    steps: Optional[List[int]] = None  # default: 24/36 and 33/36 of the run
    grad_clip: float = 35.0
    device: str = "cpu"
    amp: bool = False
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 20
    sync_bn: bool = False  # share BatchNorm statistics over the GPUs (the recipes' SyncBN; CUDA)
    freeze_bn: bool = False  # BatchNorms use and keep their running statistics (mmdet's norm_eval)
    extra_meta: Dict[str, Any] = field(default_factory=dict)


def forward_losses(
    model: nn.Module,
    batch: Tensor,
    gt_boxes: Sequence[Tensor],
    gt_labels: Sequence[Tensor],
    generator=None,
) -> Dict[str, Tensor]:
    """All losses (plus RoI accuracy) of one batch, the way mmrotate's forward_train does.

    Oriented R-CNN gives the four keys of ``LOSS_KEYS``; Refined-Det its ``base.*`` and
    ``refine.*`` losses (``training.refined_det``). ``generator``: one torch.Generator for the
    batch's sampling, or one per image.
    """
    from ..detector.refined_det import RefinedDet

    if isinstance(model, RefinedDet):
        from .refined_det import refined_det_losses

        return refined_det_losses(model, batch, gt_boxes, gt_labels)
    sizes = [tuple(batch.shape[-2:])] * batch.shape[0]
    feats = model.extract_feat(batch)
    cls_scores, bbox_preds = model.rpn_head(feats)
    losses = rpn_loss(model.rpn_head, cls_scores, bbox_preds, gt_boxes, sizes, generator)
    proposals = training_proposals(model.rpn_head, cls_scores, bbox_preds)
    samples = sample_rois(
        proposals, gt_boxes, gt_labels, model.roi_head.num_classes, model.roi_head.bbox_coder, generator
    )
    rois = torch.cat([s.rois for s in samples])
    cls_score, bbox_pred = model.roi_head(feats, rois)
    losses.update(rcnn_loss(cls_score, bbox_pred, samples, model.roi_head.num_classes))
    return losses


class LossModel(nn.Module):
    """The detector with its training losses as ``forward``: DDP synchronises gradients of
    whatever runs inside the forward of the module it wraps."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, batch: Tensor, gt_boxes, gt_labels, generators) -> Dict[str, Tensor]:
        return forward_losses(self.detector, batch, gt_boxes, gt_labels, generators)


def _seed(*keys: int) -> int:
    return int(np.random.SeedSequence(list(keys)).generate_state(1)[0])


def freeze_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """All parameters with weight decay, as the configs' plain AdamW does."""
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": weight_decay}]


class Trainer:
    """Trains ``model`` on ``dataset`` (a ChipDataset), writing checkpoints into ``out_dir``."""

    def __init__(
        self,
        model: nn.Module,
        dataset,
        cfg: TrainConfig,
        out_dir: Path,
        log: Optional[Callable[[str], None]] = None,
        dist: Optional[DistContext] = None,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError(
                "no training chips: no labelled objects fall inside the rasters "
                "(check that labels and rasters overlap and the class names match)"
            )
        self.dist = dist or DistContext()
        self.device = self.dist.device(cfg.device)
        self.model = model.to(self.device)
        self.loss_model = wrap(LossModel(self.model), self.dist, self.device, cfg.sync_bn)
        self.dataset = dataset
        self.cfg = cfg
        self.out_dir = Path(out_dir)
        if self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        self.log = (log or (lambda msg: None)) if self.dist.is_main else (lambda msg: None)
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, cfg.weight_decay),
            lr=cfg.lr,
            betas=(0.9, 0.999),
            weight_decay=cfg.weight_decay,
        )
        steps = cfg.steps if cfg.steps is not None else default_steps(cfg.iterations)
        self.schedule = StepSchedule(cfg.lr, steps, 0.1, cfg.warmup_iters, cfg.warmup_ratio)
        self.use_amp = bool(cfg.amp and str(self.device).startswith("cuda"))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.iteration = 0
        self.history: List[Dict[str, float]] = []

    # data ------------------------------------------------------------------------
    @property
    def global_batch(self) -> int:
        return self.cfg.batch_size * self.dist.world_size

    def _batch_indices(self, iteration: int) -> List[Tuple[int, int]]:
        """(position in the global batch, sample index) of this rank's share of the batch:
        shuffled epochs of the samples, seeded per epoch, cut into global batches, each rank
        taking its ``batch_size`` consecutive positions."""
        n, g, b = len(self.dataset), self.global_batch, self.cfg.batch_size
        out = []
        for k in range(self.dist.rank * b, self.dist.rank * b + b):
            epoch, j = divmod(iteration * g + k, n)
            order = np.random.default_rng([self.cfg.seed, epoch]).permutation(n)
            out.append((k, int(order[j])))
        return out

    def _batch(self, iteration: int) -> Tuple[Tensor, List[Tensor], List[Tensor], List[torch.Generator]]:
        samples, generators = [], []
        for k, index in self._batch_indices(iteration):
            self.dataset.rng = np.random.default_rng([self.cfg.seed, 1, iteration, k])
            samples.append(self.dataset[index])
            generators.append(torch.Generator().manual_seed(_seed(self.cfg.seed, 2, iteration, k)))
        batch, boxes, labels = collate(samples)
        dev = self.device
        return batch.to(dev), [b.to(dev) for b in boxes], [lab.to(dev) for lab in labels], generators

    # one step ----------------------------------------------------------------------
    def step(self) -> Dict[str, float]:
        it = self.iteration
        torch.manual_seed(_seed(self.cfg.seed, 3, it, self.dist.rank))  # drop-path of this rank
        lr = self.schedule.lr(it)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        t0 = time.perf_counter()
        batch, boxes, labels, generators = self._batch(it)
        t_data = time.perf_counter() - t0
        self.loss_model.train()
        if self.cfg.freeze_bn:
            freeze_batchnorm(self.model)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.use_amp):
            losses = self.loss_model(batch, boxes, labels, generators)
        total = sum(v for k, v in losses.items() if "loss" in k)
        if not torch.isfinite(total):
            raise FloatingPointError(f"the loss became {total.item()} at iteration {it}; lower --lr")
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        grad_norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.iteration += 1
        record = {k: float(v.detach()) for k, v in losses.items()}
        record.update(loss=float(total.detach()), grad_norm=float(grad_norm))
        record = self.dist.mean(record)  # logged values: the mean over the ranks, as mmdet logs
        record.update(lr=lr, iter=self.iteration, data_time=t_data, step_time=time.perf_counter() - t0)
        return record

    # the loop ----------------------------------------------------------------------
    def run(
        self,
        progress: bool = True,
        should_stop: Optional[Callable[[], bool]] = None,
        on_step: Optional[Callable[[int, int, Dict[str, float]], None]] = None,
    ) -> List[Dict[str, float]]:
        """Train up to ``cfg.iterations``; ``should_stop`` (checked after every step) ends the run
        early with a checkpoint to resume from; ``on_step(iteration, total, record)`` reports."""
        cfg = self.cfg
        bar = ProgressBar(cfg.iterations, self.iteration) if progress and self.dist.is_main else None
        log_path = self.out_dir / "log.jsonl"
        t0 = time.monotonic()
        window: List[Dict[str, float]] = []
        while self.iteration < cfg.iterations:
            record = self.step()
            record["time"] = round(time.monotonic() - t0, 2)
            window.append(record)
            self.history.append(record)
            if self.iteration % cfg.log_every == 0 or self.iteration == cfg.iterations:
                if self.dist.is_main:
                    with open(log_path, "a", encoding="utf-8") as fh:
                        fh.write(json.dumps(self.log_entry(window)) + "\n")
                window = []
            if bar is not None:
                bar.update(self.iteration, {"loss": record["loss"], "lr": record["lr"]})
            if on_step is not None:
                on_step(self.iteration, cfg.iterations, record)
            if self.iteration % cfg.checkpoint_every == 0 or self.iteration == cfg.iterations:
                self.save()
            if should_stop is not None and should_stop():
                self.save()
                break
        if self.history and self.dist.is_main:
            self.log(self.speed_summary())
        return self.history

    def log_entry(self, window: List[Dict[str, float]]) -> Dict[str, Any]:
        """Mean losses over the window, with the speed and memory figures of one GPU (rank 0)."""
        keys = [k for k in window[-1] if "loss" in k or k == "acc"]  # both detector families
        mean = {k: float(np.mean([r[k] for r in window])) for k in keys}
        step = float(np.mean([r["step_time"] for r in window]))
        entry = {"iter": self.iteration, "lr": window[-1]["lr"], **mean, "time": window[-1]["time"]}
        entry.update(
            s_per_iter=round(step, 4),
            data_s_per_iter=round(float(np.mean([r["data_time"] for r in window])), 4),
            images_per_s_per_gpu=round(self.cfg.batch_size / max(step, 1e-9), 3),
            world_size=self.dist.world_size,
        )
        mem = peak_memory_mb(self.device)
        entry["gpu_mem_mb" if mem is not None else "rss_mb"] = round(
            mem if mem is not None else (rss_mb() or 0), 1
        )
        return entry

    def speed_summary(self) -> str:
        """One line: time per iteration, throughput and peak memory per process."""
        recent = self.history[-min(len(self.history), 50) :]
        step = float(np.median([r["step_time"] for r in recent]))
        mem = peak_memory_mb(self.device)
        unit = "GPU" if mem is not None else "process"
        where = f"peak GPU memory {mem:.0f} MiB" if mem is not None else f"peak RSS {rss_mb() or 0:.0f} MiB"
        return (
            f"speed: {step:.3f} s/iteration (median of the last {len(recent)}), "
            f"{self.cfg.batch_size / max(step, 1e-9):.2f} images/s per {unit} x {self.dist.world_size}; "
            f"{where} per {unit}"
        )

    # checkpoints --------------------------------------------------------------------
    def meta(self) -> Dict[str, Any]:
        cfg = asdict(self.cfg)
        extra = cfg.pop("extra_meta")
        return {
            "CLASSES": tuple(self.model.classes),
            "iter": self.iteration,
            "epoch": 0,
            "qgis_unravel_train": {"config": cfg, "model": dict(self.model.info)},
            **extra,
        }

    def save(self) -> Optional[Path]:
        """``iter_N.pth`` (mmrotate format) + ``latest.pth`` and the resume state; old ones pruned.
        Only rank 0 writes; the others wait for it."""
        from ..detector.checkpoint import save_checkpoint

        if not self.dist.is_main:
            self.dist.barrier()
            return None
        path = self.out_dir / f"iter_{self.iteration}.pth"
        save_checkpoint(self.model, path, self.meta())
        save_checkpoint(self.model, self.out_dir / "latest.pth", self.meta())
        state = {
            "iteration": self.iteration,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "config": json.dumps(asdict(self.cfg)),
        }
        torch.save(state, self.out_dir / "resume_state.pth")
        kept = sorted(self.out_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
        for old in kept[: -self.cfg.keep_checkpoints] if self.cfg.keep_checkpoints > 0 else []:
            old.unlink()
        self.log(f"saved {path}")
        self.dist.barrier()
        return path

    def resume(self) -> bool:
        """Continue from ``latest.pth`` and the resume state in ``out_dir``; False if none."""
        from ..detector.checkpoint import load_strict, read_checkpoint

        state_path, weights = self.out_dir / "resume_state.pth", self.out_dir / "latest.pth"
        if not (state_path.is_file() and weights.is_file()):
            return False
        sd, _ = read_checkpoint(weights)
        load_strict(self.model, sd)
        state = torch.load(state_path, map_location=self.device, weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.iteration = int(state["iteration"])
        return True
