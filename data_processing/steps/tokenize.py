"""Tokenization into Megatron's indexed format, one `.bin/.idx` shard per domain and task.

Built on datatrove's MegatronDocumentTokenizer (same tokenizer loading, EOD post-processor and
MegatronTokenizedFile writer); it only routes each document to its domain's shard, because the trainer
blends domains with weights. The finalize step merges the shards of a domain into `<domain>.bin/.idx`.
"""

from __future__ import annotations

from datatrove.data import DocumentsPipeline
from datatrove.pipeline.tokens.megatron_tokenizer import MegatronDocumentTokenizer, MegatronTokenizedFile
from datatrove.utils.batching import batched

EOD_CANDIDATES = ("<|end_of_text|>", "<|endoftext|>", "</s>", "<eos>", "<|eos|>")


def find_eod_token(tokenizer) -> str:
    """The end-of-document token of a `tokenizers.Tokenizer` (Llama-3: <|end_of_text|>)."""
    for token in EOD_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise ValueError(
        f"tokenizer has none of the end-of-document tokens {list(EOD_CANDIDATES)}; set tokenize.eod_token"
    )


class DomainMegatronTokenizer(MegatronDocumentTokenizer):
    name = "✍️ Megatron tokenizer (per domain)"

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        shards: dict[str, MegatronTokenizedFile] = {}
        try:
            for batch in batched(data, self.batch_size):
                with self.track_time(unit="batch"):
                    encoded = self.tokenizer.encode_batch([doc.text for doc in batch])
                    for doc, encoding in zip(batch, encoded, strict=True):
                        domain = doc.metadata["domain"]
                        shard = shards.get(domain)
                        if shard is None:
                            shard = shards[domain] = MegatronTokenizedFile(
                                self.output_folder, f"{domain}/{rank:05d}", token_size=self.token_size
                            )
                        shard.write(encoding.ids)
                        self.stat_update("tokens", f"tokens_{domain}", value=len(encoding.ids))
                yield from batch
        finally:
            for shard in shards.values():
                shard.close()
