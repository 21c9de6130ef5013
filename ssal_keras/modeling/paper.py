"""The paper's SSAL configurations (docs/method.md, sections 3-5): backbone, taps, heads, weights,
alpha."""

import dataclasses

from ssal_keras.modeling import backbones
from ssal_keras.modeling.model import Branch, SSALModel


@dataclasses.dataclass(frozen=True)
class PaperConfig:
    """One SSAL configuration of the paper.

    Args:
        backbone: str. Name for ``ssal_keras.backbones.build``.
        num_classes: int. Classes of the dataset.
        taps: tuple of str. Where each branch is attached (supplement figure 4's g_i).
        heads: tuple of str. Head preset of each branch (``ssal_keras.heads.HEAD_PRESETS``).
        loss_weights: tuple of float. Branch loss weights (docs/method.md, section 5).
        alpha: float. Combination exponent of the joint prediction.
        paper_groups: tuple of int. Group counts of the paper's runs (for reference).
        head_style: str. Layer settings of the heads (``ssal_keras.heads.HEAD_STYLES``): the
            authors' Keras heads on CIFAR, their PyTorch heads on ImageNet.
        backbone_options: dict. Options of ``backbones.build`` that differ from the
            backbone's defaults in this SSAL run (the authors' ImageNet SSAL run
            zero-initialises the last BatchNorm of each block; their baseline does not).
    """

    backbone: str
    num_classes: int
    taps: tuple
    heads: tuple
    loss_weights: tuple
    alpha: float
    paper_groups: tuple
    head_style: str = "authors_keras"
    backbone_options: dict = dataclasses.field(default_factory=dict)


PAPER_MODELS = {
    # Table 7; branches at g2, g3, g4 = the ends of Conv2, Conv3, Conv4.
    "resnet50_cifar100": PaperConfig(
        backbone="resnet50_cifar", num_classes=100,
        taps=("stage1", "stage2", "stage3"),
        heads=("cifar_resnet50_aux1", "cifar_resnet50_aux2", "cifar_resnet50_aux3"),
        loss_weights=(0.42, 0.59, 0.76), alpha=0.3, paper_groups=(20, 33, 50),
    ),
    # Table 9; g2 = after block 2 of group 1, g5 = after block 2 of group 2, g6 = end of group 2.
    "wrn_28_10_cifar100": PaperConfig(
        backbone="wrn_28_10", num_classes=100,
        taps=("stage1_block2", "stage2_block2", "stage2"),
        heads=("cifar_wrn_densenet_aux1", "cifar_wrn_densenet_aux2", "cifar_wrn_densenet_aux3"),
        loss_weights=(0.8, 0.9, 1.0), alpha=0.4, paper_groups=(20, 33, 50),
    ),
    # Table 8. The supplement gives no positions for SE-WRN 16-8; Table 8's first convs (5x5/2,
    # 5x5, 3x3) are ResNet50's, made for 32x32, 16x16 and 8x8 maps, so the branches sit at the
    # end of group 1, the end of group 2 and after block 1 of group 3: 14,184,123 parameters.
    # The authors' README says 14.9M (README.md:21, count_params() rounded: keras/train.py:256);
    # its layout cannot be known: their code has no SE-WRN heads or positions, their WRN SSAL
    # positions (keras/run_experiments.py:81) do not exist at depth 16, and Table 8's heads at
    # no choice of taps count 14.85-14.95M (BUILD_NOTES.md, "Parameter counts").
    # The loss weights and alpha follow the WRN 28-10 run.
    "se_wrn_16_8_cifar100": PaperConfig(
        backbone="se_wrn_16_8", num_classes=100,
        taps=("stage1", "stage2", "stage3_block1"),
        heads=("cifar_se_wrn_aux1", "cifar_se_wrn_aux2", "cifar_se_wrn_aux3"),
        loss_weights=(0.8, 0.9, 1.0), alpha=0.4, paper_groups=(20, 33, 50),
    ),
    # Table 9; end of dense block 1, start of dense blocks 2 and 3.
    "densenet_bc_190_40_cifar100": PaperConfig(
        backbone="densenet_bc_190_40", num_classes=100,
        taps=("stage1", "transition1", "transition2"),
        heads=("cifar_wrn_densenet_aux1", "cifar_wrn_densenet_aux2", "cifar_wrn_densenet_aux3"),
        loss_weights=(0.8, 0.9, 1.0), alpha=0.5, paper_groups=(20, 33, 50),
    ),
    # Table 6 and supplement E.3: one AuxNet1 branch at g2 (end of Conv2), 40 groups.
    "resnet18_tiny_imagenet": PaperConfig(
        backbone="resnet18_tiny_imagenet", num_classes=200,
        taps=("stage1",), heads=("tiny_imagenet_resnet18_aux1",),
        loss_weights=(1.0,), alpha=0.3, paper_groups=(40,),
    ),
    # Table 10; g2, g3, g4 = the ends of Conv2, Conv3, Conv4.
    "resnet50_imagenet": PaperConfig(
        backbone="resnet50_imagenet", num_classes=1000,
        taps=("stage1", "stage2", "stage3"),
        heads=("imagenet_resnet50_aux1", "imagenet_resnet50_aux2", "imagenet_resnet50_aux3"),
        loss_weights=(1.0, 1.0, 1.0), alpha=0.3, paper_groups=(200, 334, 500),
        head_style="authors_pytorch", backbone_options={"zero_init_residual": True},
    ),
}


def paper_model(name, *, groupings, alpha=None, objective="multitask"):
    """Builds one of the paper's SSAL models.

    Args:
        name: str. A key of ``PAPER_MODELS``, e.g. ``"resnet50_cifar100"``.
        groupings: list of groupings (arrays or paths), one per branch of the configuration
            (three, or one for ``resnet18_tiny_imagenet``); any group counts, the paper used
            20/33/50 on CIFAR100 and 200/334/500 on ImageNet.
        alpha: float or None. Overrides the paper's combination exponent.
        objective: str. ``"multitask"`` (the paper) or ``"joint"`` (supplement E.1).

    Returns:
        SSALModel. Untrained, named ``name``.
    """
    if name not in PAPER_MODELS:
        raise ValueError(
            f"name={name!r} is not a paper model; valid: {', '.join(PAPER_MODELS)}."
        )
    config = PAPER_MODELS[name]
    if isinstance(groupings, (str, bytes)) or len(groupings) != len(config.taps):
        received = "a string" if isinstance(groupings, (str, bytes)) else len(groupings)
        raise ValueError(
            f"{name} has {len(config.taps)} branch(es) and takes that many groupings; "
            f"received groupings with {received} entries."
        )
    backbone = backbones.build(config.backbone, num_classes=config.num_classes,
                               **config.backbone_options)
    branches = [
        Branch(tap=tap, grouping=grouping, head=head, loss_weight=weight,
               head_style=config.head_style)
        for tap, grouping, head, weight in zip(
            config.taps, groupings, config.heads, config.loss_weights
        )
    ]
    return SSALModel(
        backbone, branches, alpha=config.alpha if alpha is None else alpha,
        objective=objective, name=name,
    )
