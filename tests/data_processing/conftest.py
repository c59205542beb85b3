import pytest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory, llama3_tokenizer_dir):
    """The data stage of the demo at small size, on real text: (corpus, manifest path)."""
    from megatron_infi.demo import corpus as demo_corpus
    from megatron_infi.demo.data import run

    out = tmp_path_factory.mktemp("data_run")
    manifest = run(out, size="small", tokenizer_dir=llama3_tokenizer_dir)
    corpus = demo_corpus.build(out / "corpus", size="small")  # same seed: identical files and ground truth
    return corpus, manifest
