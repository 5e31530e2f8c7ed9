"""Training adapters, one job per file:

    config.py       the settings of a training run (tasks, LoRA, schedule), of a DPO run and of a retriever
                    training run, read from YAML
    data.py         examples rendered exactly as the variant serves them, validation split, weighted mixture
    sft.py          supervised fine-tuning (LoRA on an NF4 or full-precision base), the pre-flight estimate
    callbacks.py    TensorBoard, early stopping, checkpoints on Ctrl-C and on a timer, progress
    card.py         the self-describing adapter folder, written atomically
    search.py       hyperparameter search (grid, random) with Optuna
    dpo.py          preference tuning of an SFT adapter (TRL's DPOTrainer)
    preference.py   preference pairs without voters: sampled answers ranked by the fact metrics
    question_pairs.py  (question, passage, hard negatives) from labelled chats or drafted questions
    retriever.py    an embedder (bi-encoder) or reranker (cross-encoder) trained on the domain, its card
"""
