"""A run's settings resolved once into named, frozen records: what the trainer, the model
builder and ``--dry_run`` take, instead of reading the flags themselves.

``RunConfig`` holds the flags as given (a setting left at None means "the paper model's, else
the default"); ``resolve(config)`` (``RunConfig.resolve()``) fills every gap once:

* ``BackboneSettings``: the backbone's name, the options given to its builder, every option
  the builder resolves them to, and the input normalisation;
* ``BranchSettings`` (None for a baseline): taps, heads, loss weights, alpha, objective and
  head style of the SSAL branches (docs/method.md, section 1);
* ``DecaySettings``: which parameter classes decay at which rate (``modeling.weight_decay``);
* ``ScheduleSettings``: the optimizer and its learning-rate schedule;
* ``DataSettings``: the dataset, its caps, the batch sizes, the data order and augmentation;
* ``LossSettings``: label smoothing.
"""

import dataclasses

import keras

from ssal_keras.modeling import backbones, heads
from ssal_keras.modeling import weight_decay as weight_decay_lib
from ssal_keras.training import schedules

DEFAULT_BACKBONE = "resnet_fashion_mnist"
DEFAULT_ALPHA = 0.3
# The ImageNet statistics of torchvision's models, in raw-pixel units (docs/authors_settings.md,
# section 7.2).
IMAGENET_MEAN_STD = ((123.675, 116.28, 103.53), (58.395, 57.12, 57.375))
_NORMALIZATIONS = {"none": None, "scale": "scale", "mean_std": "mean_std",
                   "imagenet": IMAGENET_MEAN_STD}
_DECAY_SHAPES = {"slanted_triangular": "linear", "warmup_step": "step",
                 "warmup_cosine": "cosine", "constant": "constant"}


@dataclasses.dataclass(frozen=True)
class BackboneSettings:
    """The backbone of a run.

    Attributes:
        name: str. A ``backbones.build`` name.
        options: dict. The builder options the run sets (the paper model's, ``--zero_init_
            residual``): what ``build`` is given.
        builder_options: dict. Every option of the builder, as those resolve
            (``registry.resolved_options``): what ``--dry_run`` shows.
        normalization: ``backbones.build``'s ``normalization``; ``"mean_std"`` is measured on
            the training split by the trainer.
    """

    name: str
    options: dict
    builder_options: dict
    normalization: object

    def build(self, *, num_classes, input_shape, normalization):
        """The backbone, with ``normalization`` (this record's, or its measured statistics)."""
        return backbones.build(self.name, num_classes=num_classes, input_shape=input_shape,
                               normalization=normalization, **self.options)


@dataclasses.dataclass(frozen=True)
class BranchSettings:
    """The SSAL branches of a run, one entry per branch in each tuple.

    Attributes:
        taps: tuple of str. Where each head is attached.
        heads: tuple. Each a ``HEAD_PRESETS`` name, a tuple of blocks, or None (the default).
        loss_weights: tuple of float.
        alpha: float. Weight of the branches in the joint prediction.
        objective: str. ``"multitask"`` or ``"joint"`` (supplement E.1).
        head_style: blocks.LayerStyle. The heads' conv/BN style.
    """

    taps: tuple
    heads: tuple
    loss_weights: tuple
    alpha: float
    objective: str
    head_style: object

    def describe(self):
        """Plain JSON types, every head as its blocks (``--dry_run``)."""
        return {"taps": list(self.taps),
                "heads": [list(heads.resolve_layout(h)) for h in self.heads],
                "loss_weights": list(self.loss_weights), "alpha": self.alpha,
                "objective": self.objective, "head_style": dataclasses.asdict(self.head_style)}


@dataclasses.dataclass(frozen=True)
class DecaySettings:
    """Weight decay as the gradient term ``rate * w`` (docs/authors_settings.md, section 3).

    Attributes:
        weight_decay: float. Rate of the parameter classes in ``decayed``.
        aux_weight_decay: float. Rate of the parameter classes in ``aux_decayed``.
        decayed, aux_decayed: tuple of str. ``weight_decay.PARAMETER_CLASSES``.
    """

    weight_decay: float
    aux_weight_decay: float
    decayed: tuple
    aux_decayed: tuple

    def _arguments(self):
        return dict(weight_decay=self.weight_decay, aux_weight_decay=self.aux_weight_decay,
                    decayed=self.decayed, aux_decayed=self.aux_decayed)

    def rates(self, model):
        """Each trainable variable's decay rate, in ``model.trainable_variables`` order."""
        return weight_decay_lib.decay_rates(model, **self._arguments())

    def by_class(self):
        """Each parameter class's rate (``--dry_run``)."""
        return weight_decay_lib.rates_by_class(**self._arguments())


@dataclasses.dataclass(frozen=True)
class ScheduleSettings:
    """SGD with momentum on a learning-rate schedule (docs/authors_settings.md, section 2)."""

    kind: str
    learning_rate: float
    epochs: int
    warmup_epochs: float
    lr_drop_epochs: tuple
    momentum: float
    nesterov: bool

    def learning_rate_schedule(self, steps_per_epoch):
        """The learning rate of every step of a run of ``steps_per_epoch`` steps an epoch."""
        peak, epochs = self.learning_rate, self.epochs
        if self.kind in ("epoch_triangular", "piecewise_linear"):
            cls = (schedules.EpochTriangularSchedule if self.kind == "epoch_triangular"
                   else schedules.PiecewiseLinearSchedule)
            return cls(peak, steps_per_epoch, epochs, warmup_epochs=int(self.warmup_epochs))
        total = steps_per_epoch * epochs
        return schedules.WarmupSchedule(
            peak, warmup_steps=0 if self.kind == "constant" else min(
                int(round(self.warmup_epochs * steps_per_epoch)), total),
            total_steps=total, decay=_DECAY_SHAPES[self.kind],
            step_boundaries=[e * steps_per_epoch for e in self.lr_drop_epochs])

    def optimizer(self, steps_per_epoch):
        """SGD with momentum (and Nesterov) on the schedule.

        Keras's SGD folds the rate into the velocity (``v = m v - lr g; w += v``), as the
        authors' Keras (CIFAR) runs did; PyTorch's (their ImageNet runs) applies it after
        (``b = m b + g; w -= lr b``). The two agree while the rate is constant.
        """
        optimizer = keras.optimizers.SGD(
            learning_rate=self.learning_rate_schedule(steps_per_epoch),
            momentum=self.momentum, nesterov=self.nesterov)
        # float16 gradients underflow without loss scaling (dynamic: Keras's
        # LossScaleOptimizer halves the scale and skips the step on a non-finite gradient).
        if keras.mixed_precision.global_policy().compute_dtype == "float16":
            return keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer


@dataclasses.dataclass(frozen=True)
class DataSettings:
    """The data of a run and how it is fed (``ssal_keras.data``)."""

    dataset: str
    data_dir: str | None
    train_examples: int | None
    eval_examples: int | None
    held_out_examples: int
    image_size: int | None
    batch_size: int
    eval_batch_size: int
    seed: int
    shuffle: str
    augment: str
    crop_area: tuple
    color_jitter: float

    def augment_options(self):
        """Keyword arguments of the training pipeline's random-resized crops."""
        return {"crop_area": self.crop_area or None, "color_jitter": self.color_jitter}


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Label smoothing of every loss term (``modeling.losses``)."""

    label_smoothing: float
    label_smoothing_mode: str


@dataclasses.dataclass(frozen=True)
class ResolvedRun:
    """Every setting of a run, resolved: the records above, and how often the trainer
    checkpoints and logs."""

    backbone: BackboneSettings
    branches: BranchSettings | None
    decay: DecaySettings
    schedule: ScheduleSettings
    data: DataSettings
    loss: LossSettings
    checkpoint_steps: int
    log_every_steps: int


def resolve_backbone(config):
    """The ``BackboneSettings`` of ``config`` (a ``RunConfig``): the paper model's where the
    run does not say."""
    source = config.paper
    name = config.backbone or (source.backbone if source else DEFAULT_BACKBONE)
    options = dict(source.backbone_options) if (source and config.groupings) else {}
    if config.zero_init_residual is not None:
        options["zero_init_residual"] = config.zero_init_residual
    return BackboneSettings(name=name, options=options,
                            builder_options=backbones.registry.resolved_options(name, **options),
                            normalization=_NORMALIZATIONS[config.normalization])


def resolve_branches(config, count):
    """The ``BranchSettings`` of ``count`` branches of ``config``, the paper model's where the
    run does not say; None when ``count`` is 0."""
    if not count:
        return None
    source = config.paper
    head_list = [h if h in heads.HEAD_PRESETS or h == "default" else tuple(h.split())
                 for h in config.head] or list(source.heads if source else ["default"] * count)
    return BranchSettings(
        taps=tuple(config.taps) or tuple(source.taps if source else ()),
        heads=tuple(None if h == "default" else h for h in head_list),
        loss_weights=tuple(config.loss_weights) or tuple(
            source.loss_weights if source else (1.0,) * count),
        alpha=config.alpha if config.alpha is not None else (
            source.alpha if source else DEFAULT_ALPHA),
        objective=config.objective,
        head_style=heads.resolve_style(config.head_style or (
            source.head_style if source else heads.DEFAULT_HEAD_STYLE)))


def resolve_schedule(config):
    """The ``ScheduleSettings`` of ``config``."""
    return ScheduleSettings(
        kind=config.schedule, learning_rate=config.learning_rate, epochs=config.epochs,
        warmup_epochs=config.warmup_epochs, lr_drop_epochs=tuple(config.lr_drop_epochs),
        momentum=config.momentum, nesterov=config.nesterov)


def resolve(config, num_branches):
    """``config`` (a ``RunConfig`` of ``num_branches`` branches) resolved."""
    return ResolvedRun(
        backbone=resolve_backbone(config),
        branches=resolve_branches(config, num_branches),
        decay=DecaySettings(
            weight_decay=config.weight_decay,
            aux_weight_decay=(config.aux_weight_decay if config.aux_weight_decay is not None
                              else config.weight_decay),
            decayed=tuple(config.weight_decay_params),
            aux_decayed=tuple(config.aux_weight_decay_params)),
        schedule=resolve_schedule(config),
        data=DataSettings(**{f.name: getattr(config, f.name)
                             for f in dataclasses.fields(DataSettings)}),
        loss=LossSettings(label_smoothing=config.label_smoothing,
                          label_smoothing_mode=config.label_smoothing_mode),
        checkpoint_steps=config.checkpoint_steps,
        log_every_steps=config.log_every_steps)
