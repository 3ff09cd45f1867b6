"""M-PRTM, the multimodal heart-failure prognosis model (pure PyTorch)."""
