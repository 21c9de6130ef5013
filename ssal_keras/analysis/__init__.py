"""What a trained model does (its scores are ``ssal_keras.evaluation.scoring``):
``error_analysis`` (which mistakes the joint output fixes),
``cam`` (class activation maps), ``attacks`` (FGSM and BIM robustness), ``summary`` (mean and
spread over seeds, paired comparisons) and ``plots`` (their figures).
"""
