"""DAE-Former: Dual Attention-guided Efficient Transformer for medical image segmentation.

Written from Azad et al., "DAE-Former: Dual Attention-guided Efficient Transformer for
Medical Image Segmentation" (PRIME workshop, MICCAI 2023; arXiv:2212.13504).  The
encoder stacks *dual transformer blocks*: efficient attention over space (Shen et al.,
"Efficient Attention: Attention with Linear Complexities", WACV 2021) followed by
transpose (channel / cross-covariance) attention (Ali et al., "XCiT", NeurIPS 2021),
each followed by a Mix-FFN.  The decoder up-samples by patch expanding and fuses the
encoder's skip connections by skip-connection cross attention (SCCA).
"""

from model.daeformer.encoder import DAEFormerEncoder
from model.daeformer.net import DAEFormer

__all__ = ["DAEFormer", "DAEFormerEncoder"]
