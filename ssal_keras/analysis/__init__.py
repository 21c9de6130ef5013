"""What a trained model does: ``scoring`` (the one evaluation: top-1/top-5 of every output,
group accuracy of every branch), ``error_analysis`` (which mistakes the joint output fixes),
``cam`` (class activation maps), ``attacks`` (FGSM and BIM robustness), ``summary`` (mean and
spread over seeds, paired comparisons) and ``plots`` (their figures).
"""
