"""The SSAL model: any Keras classifier plus auxiliary branches and a joint prediction.

docs/method.md, section 1: each branch taps an intermediate feature map of the backbone, predicts a
grouping of the labels derived from the labels themselves, and is trained with the base
classifier (multi-task); at inference the softmaxes are fused into the joint prediction.
"""

import contextlib
import dataclasses
import os

import keras
import numpy as np
from keras import ops

from ssal_keras import grouping as grouping_lib
from ssal_keras.modeling import backbones, graph, heads, loaded_configs
from ssal_keras.modeling.joint import JointPrediction, validate_alpha
from ssal_keras.modeling.losses import SparseCrossentropy
from ssal_keras.modeling.names import BASE, JOINT, aux_name

OBJECTIVES = ("multitask", "joint")


@dataclasses.dataclass
class Branch:
    """One SSAL branch: where it taps the backbone, what it predicts and how much it counts.

    Args:
        tap: str. A tap name of ``ssal_keras.backbones.taps(backbone)`` (e.g. ``"stage2"``) or
            the name of any layer of the backbone whose output is a 4-D feature map.
        grouping: array-like of int, or a path. One group id per class (docs/method.md, section 2);
            a path is read with ``ssal_keras.grouping.load_grouping`` (in user code only:
            ``SSALModel.from_config``, i.e. loading a ``.keras`` file, refuses paths).
        head: None, str or list of str. The auxiliary head: ``None`` for
            ``heads.DEFAULT_HEAD``, a preset of ``heads.HEAD_PRESETS``, or blocks in the head
            vocabulary (``["cbr(128,3)", "inception_e", "gap"]``).
        loss_weight: float. Weight ``w_b`` of the branch's loss (docs/method.md, section 5).
        head_style: None, str, dict or ``blocks.LayerStyle``. The head's conv bias,
            initialisers and BatchNorm settings: a name of ``heads.HEAD_STYLES``
            (``"authors_keras"``, the default: the authors' CIFAR heads;
            ``"authors_pytorch"``: their ImageNet heads) or the fields themselves.
    """

    tap: str
    grouping: object
    head: object = None
    loss_weight: float = 1.0
    head_style: object = None

    def __post_init__(self):
        if isinstance(self.grouping, (str, os.PathLike)):
            self.grouping = grouping_lib.load_grouping(self.grouping)
        self.grouping = grouping_lib.validate_grouping(self.grouping, name="Branch.grouping")
        self.head = heads.resolve_layout(self.head)
        self.head_style = heads.resolve_style(self.head_style)
        if isinstance(self.loss_weight, bool) or not isinstance(
            self.loss_weight, (int, float, np.number)
        ) or not (np.isfinite(self.loss_weight) and self.loss_weight >= 0):
            raise ValueError(
                f"Branch.loss_weight must be a finite number >= 0; received {self.loss_weight!r}."
            )
        self.loss_weight = float(self.loss_weight)

    @property
    def num_groups(self):
        return int(self.grouping.max()) + 1

    def get_config(self):
        return {
            "tap": self.tap,
            "grouping": self.grouping.tolist(),
            "head": list(self.head),
            "loss_weight": self.loss_weight,
            "head_style": dataclasses.asdict(self.head_style),
        }


@contextlib.contextmanager
def _global_policy(name):
    """Keras's global dtype policy set to ``name`` for the block, then restored."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _base_is_softmax(backbone):
    layer = graph.producing_layer(backbone, backbone.output)
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Softmax) or (
        activation is not None and getattr(activation, "__name__", "") == "softmax"
    )


def _check_backbone(backbone):
    if not graph.is_functional(backbone):
        raise ValueError(
            f"backbone must be a functional keras.Model (built with keras.Input); received "
            f"{type(backbone).__name__}. Subclassed models have no layer graph to tap."
        )
    if len(backbone.inputs) != 1 or len(backbone.outputs) != 1:
        raise ValueError(
            f"backbone must have one input and one output (the class probabilities); it has "
            f"{len(backbone.inputs)} input(s) and {len(backbone.outputs)} output(s)."
        )
    if len(backbone.output.shape) != 2 or not _base_is_softmax(backbone):
        output_layer = graph.producing_layer(backbone, backbone.output)
        raise ValueError(
            f"backbone output must be softmax class probabilities of shape (batch, classes); "
            f"its output layer {output_layer.name!r} gives shape "
            f"{tuple(backbone.output.shape)}. End the backbone in Dense(C, activation='softmax')."
        )


def _validate_arguments(backbone, branches, alpha, objective):
    """Checks ``SSALModel``'s arguments, in this order; dicts in ``branches`` become ``Branch``.

    Returns:
        ``(branches, alpha, num_classes)``: the branches as a list of ``Branch``, the
        validated ``alpha`` and the backbone's number of classes.
    """
    _check_backbone(backbone)
    branches = [b if isinstance(b, Branch) else Branch(**b) for b in branches]
    if not branches:
        raise ValueError("branches is empty; give at least one ssal_keras.Branch.")
    if objective not in OBJECTIVES:
        raise ValueError(
            f"objective must be one of {OBJECTIVES}; received objective={objective!r}."
        )
    alpha = validate_alpha(alpha)
    num_classes = backbone.output.shape[-1]
    for index, branch in enumerate(branches):
        if len(branch.grouping) != num_classes:
            raise ValueError(
                f"branches[{index}].grouping has {len(branch.grouping)} labels but the "
                f"backbone has {num_classes} classes; give one group id per class."
            )
    return branches, alpha, num_classes


def _heads_policy_name(heads_dtype_policy):
    """The name of the heads' dtype policy: ``heads_dtype_policy`` or Keras's global one.

    The backbone's layers keep their own policies in its config; the heads are built from
    their layouts, so their policy is recorded too (a model trained in mixed_bfloat16 and
    loaded in a float32 process computes its heads as trained).
    """
    return keras.dtype_policies.get(
        heads_dtype_policy or keras.mixed_precision.global_policy()).name


def _build_outputs(backbone, branches, alpha, heads_dtype_policy):
    """The functional model's outputs: ``{"base": ..., "aux_0": ..., ..., "joint": ...}``.

    Output layers carry the output names (Keras lists outputs by layer name). The base output
    stays float32, as the backbone's softmax is: a bfloat16 Identity would round the
    probabilities to 3 digits. Layers are created in this order: base, the heads in branch
    order, joint.
    """
    base = keras.layers.Identity(dtype="float32", name=BASE)(backbone.output)
    aux = []
    with _global_policy(heads_dtype_policy):
        for index, branch in enumerate(branches):
            tap = backbones.resolve_tap(backbone, branch.tap)
            features = backbone.get_layer(tap.layer_name).output
            aux.append(heads.build_head(
                features, layout=branch.head, num_groups=branch.num_groups,
                style=branch.head_style, name=aux_name(index),
            ))
    joint = JointPrediction([b.grouping for b in branches], alpha=alpha, name=JOINT)(
        [base, *aux]
    )
    return {BASE: base, **{aux_name(i): a for i, a in enumerate(aux)}, JOINT: joint}


@keras.saving.register_keras_serializable(package="ssal_keras")
class SSALModel(keras.Model):
    """A classifier with SSAL branches and a fused joint prediction (docs/method.md, section 1).

    A functional model over the backbone's own layers (they are shared, not copied) whose
    outputs are a dict: ``base`` (the backbone's class probabilities), ``aux_0`` ...
    ``aux_{B-1}`` (group probabilities of each branch) and ``joint`` (the fused prediction).
    Trained with ``fit(images, labels)``: each branch's targets are derived from the labels
    through its grouping, for the losses and the metrics alike.

    Args:
        backbone: keras.Model. A functional classifier ending in softmax probabilities, e.g.
            ``ssal_keras.backbones.build(...)`` or ``keras.applications.ResNet50V2(weights=None)``.
        branches: list of ``Branch``. The SSAL branches, in output order.
        alpha: float. Combination exponent of the joint prediction (0.3 in the paper's ResNet50
            runs, 0.4 WRN, 0.5 DenseNet).
        objective: str. ``"multitask"``: ``CE(base, y) + sum_b w_b CE(aux_b, g_b(y))`` (the
            paper's training); ``"joint"``: ``CE(joint, y)`` only, the branches shaping the
            prediction through the product alone (supplement E.1).
        name: str. The model's name.
        heads_dtype_policy: str or None. Dtype policy of the heads' layers (default: Keras's
            global policy when the model is built, e.g. ``"mixed_bfloat16"``); kept in the
            config, so a loaded model computes its heads as it was trained.

    Example:

    >>> import keras, numpy as np, ssal_keras
    >>> backbone = ssal_keras.backbones.build("resnet18_tiny_imagenet", num_classes=4,
    ...                                       input_shape=(32, 32, 3))
    >>> model = ssal_keras.SSALModel(backbone, branches=[
    ...     ssal_keras.Branch(tap="stage2", grouping=[0, 0, 1, 1], head=["cbr(16,3)", "gap"])])
    >>> sorted(model.output_names)
    ['aux_0', 'base', 'joint']
    """

    def __init__(self, backbone, branches, *, alpha=0.3, objective="multitask", name=None,
                 heads_dtype_policy=None, **kwargs):
        branches, alpha, num_classes = _validate_arguments(backbone, branches, alpha, objective)
        heads_dtype_policy = _heads_policy_name(heads_dtype_policy)
        outputs = _build_outputs(backbone, branches, alpha, heads_dtype_policy)
        # The single input tensor, not a one-element list: the model is called on a tensor.
        super().__init__(inputs=backbone.input, outputs=outputs, name=name, **kwargs)

        # === Config ===
        self.backbone = backbone
        self.branches = branches
        self.alpha = alpha
        self.objective = objective
        self.heads_dtype_policy = heads_dtype_policy
        self.num_classes = num_classes
        # Group ids as a (branches, classes) table: one gather maps labels to every target.
        self._group_table = np.stack([b.grouping for b in branches]).astype("int32")

    # --- training ---------------------------------------------------------------------------
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, *,
                label_smoothing=0.0, label_smoothing_mode="uniform", **kwargs):
        """Configures training; defaults give the paper's loss and per-output metrics.

        Args:
            optimizer: str or keras.optimizers.Optimizer.
            loss: None, or a loss / dict of losses by output name. ``None``: sparse categorical
                cross-entropy on ``base`` and every ``aux_b`` (``objective="multitask"``) or on
                ``joint`` alone (``objective="joint"``).
            loss_weights: None or dict by output name. ``None``: 1 for ``base``/``joint``,
                each branch's ``loss_weight`` for ``aux_b``.
            metrics: None, list or dict by output name. ``None``: accuracy of ``base``,
                ``joint`` and every branch (group accuracy), top-5 of base and joint when
                there are more than 5 classes. A list applies to every output.
            label_smoothing: float. Label smoothing of the default losses
                (docs/method.md, section 5).
            label_smoothing_mode: str. ``"uniform"`` or ``"others"`` (the authors',
                ``ssal_keras.modeling.losses.SMOOTHING_MODES``).
            **kwargs: passed to ``keras.Model.compile``.
        """
        terms = self.loss_terms()
        if loss is None:
            loss = {name: SparseCrossentropy(label_smoothing, label_smoothing_mode)
                    for name in terms}
        if loss_weights is None and isinstance(loss, dict):
            weights = {BASE: 1.0, JOINT: 1.0, **self.loss_terms("multitask")}
            loss_weights = {name: weights[name] for name in loss}
        if metrics is None:
            metrics = {name: ["accuracy"] for name in self.output_names}
            if self.num_classes > 5:
                for name in (BASE, JOINT):
                    metrics[name].append(
                        keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5")
                    )
        elif isinstance(metrics, (list, tuple)):
            metrics = {name: list(metrics) for name in self.output_names}
        super().compile(
            optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics, **kwargs
        )

    def loss_terms(self, objective=None):
        """The supervised outputs and their loss weights (docs/method.md, section 1;
        supplement E.1).

        Args:
            objective: str or None. ``"multitask"`` or ``"joint"``; ``None`` for the model's.

        Returns:
            dict by output name: ``{"base": 1, "aux_b": w_b, ...}`` for the multi-task loss,
            ``{"joint": 1}`` for the joint objective.
        """
        if (objective or self.objective) == "joint":
            return {JOINT: 1.0}
        return {BASE: 1.0, **{aux_name(i): b.loss_weight for i, b in enumerate(self.branches)}}

    @property
    def _aux_names(self):
        return [aux_name(i) for i in range(len(self.branches))]

    def targets(self, labels):
        """Maps fine labels to the target of every output (the autogenous targets).

        Args:
            labels: int tensor of shape ``(batch,)`` or ``(batch, 1)``: class ids.

        Returns:
            dict by output name: the labels for ``base`` and ``joint``, ``g_b(labels)`` for
            ``aux_b``.
        """
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        group_ids = ops.take(self._group_table, labels, axis=1)
        targets = {BASE: labels, JOINT: labels}
        targets.update({name: group_ids[i] for i, name in enumerate(self._aux_names)})
        return targets

    def _expand(self, y):
        # A dict of targets is taken as given (a pipeline may derive them itself).
        return y if y is None or isinstance(y, dict) else self.targets(y)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(
            x, self._expand(y), y_pred, sample_weight=sample_weight, training=training
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        # Without this the compiled metrics would see the fine labels for every head
        # (docs/stack_notes.md, section 2).
        return super().compute_metrics(x, self._expand(y), y_pred, sample_weight=sample_weight)

    # --- serialisation ----------------------------------------------------------------------
    def compile_from_config(self, config):
        # Keras skips this for models that override compile(); ours takes the same arguments,
        # so a loaded .keras file comes back compiled, optimizer state included.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "branches": [b.get_config() for b in self.branches],
            "alpha": self.alpha,
            "objective": self.objective,
            "heads_dtype_policy": self.heads_dtype_policy,
            # The taps the backbone's builder declared: a rebuilt backbone declares them again.
            "backbone_taps": [list(pair) for pair in backbones.declared_layout(self.backbone)],
        }

    @classmethod
    def from_config(cls, config):
        """The model of ``get_config``'s dict, e.g. in ``keras.saving.load_model``.

        The config may come from an untrusted ``.keras`` file, so ``loaded_configs`` checks it
        before anything is built, whatever ``safe_mode``: inline groupings (no file is ever
        opened) and sizes under its caps; each refusal is one ValueError naming the entry.
        """
        config = dict(config)
        branches = config.pop("branches", None)
        loaded_configs.check_branches(branches, [f.name for f in dataclasses.fields(Branch)])
        loaded_configs.check_backbone(config.get("backbone"))
        # Files saved before taps were declared (issue 21) have none: names are inferred.
        layout = loaded_configs.check_taps(config.pop("backbone_taps", []))
        backbone = keras.saving.deserialize_keras_object(config.pop("backbone", None))
        if layout:
            backbones.declare_taps(backbone, layout)
        branches = [Branch(**b) for b in branches]
        return cls(backbone, branches, **config)
