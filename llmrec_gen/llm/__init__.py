"""The LLM family: prompting, inference engines, grounding, the generative recommender and
fine-tuning.

``recommender`` (:class:`LLMRecommender`), ``prompting`` (templates -> chat messages),
``engines`` (transformers / vLLM / OpenAI-compatible behind one interface), ``grounding`` (text ->
catalogue IDs), ``models`` (where models come from; device and dtype), ``adapters`` (LoRA
adapters, resolved once), ``finetune`` (TRL SFT + PEFT LoRA) and ``assets`` (the shipped adapter).
Nothing heavy is imported here.
"""
