"""Word embeddings, Chapter 3: Word2Vec (SGNS, CBOW), GloVe and PPMI + SVD.

Every method returns a :class:`WordVectors` (neighbours, similarity, analogies,
save/load); :mod:`lmbook.embeddings.evaluation` scores vectors on the standard
similarity and analogy sets; :mod:`lmbook.embeddings.explore` draws maps and the
interactive explorer.
"""

from .evaluation import (
    AnalogyResult,
    SimilarityResult,
    evaluate_analogies,
    evaluate_similarity,
    read_analogies,
    read_similarity_pairs,
    standard_dataset,
)
from .glove import GloVeConfig, cooccurrence, glove_adagrad_update, glove_loss, glove_weight, train_glove
from .ppmi import PPMIConfig, ppmi_matrix, randomized_svd, train_ppmi_svd
from .sgns import (
    SGNSConfig,
    cbow_examples,
    cbow_sgd_update,
    draw_noise,
    keep_probabilities,
    noise_distribution,
    sgns_loss,
    sgns_sgd_update,
    skipgram_pairs,
    train_sgns,
)
from .vectors import OutOfVocabularyError, WordVectors
from .vocab import EncodedCorpus, Vocabulary, build_vocab, encode, tokenize, tokenize_sentences

__all__ = [
    "AnalogyResult",
    "EncodedCorpus",
    "GloVeConfig",
    "OutOfVocabularyError",
    "PPMIConfig",
    "SGNSConfig",
    "SimilarityResult",
    "Vocabulary",
    "WordVectors",
    "build_vocab",
    "cbow_examples",
    "cbow_sgd_update",
    "cooccurrence",
    "draw_noise",
    "encode",
    "evaluate_analogies",
    "evaluate_similarity",
    "glove_adagrad_update",
    "glove_loss",
    "glove_weight",
    "keep_probabilities",
    "noise_distribution",
    "ppmi_matrix",
    "randomized_svd",
    "read_analogies",
    "read_similarity_pairs",
    "sgns_loss",
    "sgns_sgd_update",
    "skipgram_pairs",
    "standard_dataset",
    "tokenize",
    "tokenize_sentences",
    "train_glove",
    "train_ppmi_svd",
    "train_sgns",
]
