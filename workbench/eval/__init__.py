"""Evaluation: caption metrics (COCO BLEU / METEOR / ROUGE-L / CIDEr / SPICE via pycocoevalcap)."""
