"""Few-shot adaptation methods for causal LMs: ICL, fine-tuning (vanilla, pattern-based, with
LoRA or BitFit) and context distillation. Plain PyTorch and transformers; no Ray in here.

    python -m trainers run --method icl --task rte --model PATH_OR_ID --data-dir ../shared/data
"""
