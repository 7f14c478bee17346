//! The readers on the real model files, fetched into the cache by `neurolov models fetch` (which `scripts/test`
//! runs first). A missing model fails these tests: they are the proof that the readers read the real thing.

#![allow(clippy::unwrap_used)] // A panic is the failure report.

use neurolov_models::catalog::{ALL_MINILM_L6_V2, SMOLLM2_135M_INSTRUCT};
use neurolov_models::fetch::{cache_dir, check, model_dir};
use neurolov_models::gguf::{Gguf, TensorType, Value};
use neurolov_models::quant::dequantize;

fn present(model: &neurolov_models::catalog::Model) -> std::path::PathBuf {
    let cache = cache_dir().expect("a cache directory");
    check(&cache, model)
        .unwrap_or_else(|e| panic!("{} is not in {}: {e}; run `neurolov models fetch`", model.name, cache.display()));
    model_dir(&cache, model)
}

/// SmolLM2-135M-Instruct's GGUF: the Llama architecture's numbers, its tokenizer and chat template in the metadata,
/// and a tensor index whose Q4_1 and F32 tensors cover the file's data.
#[test]
fn the_smollm2_gguf_reads_as_a_llama_with_its_tokenizer() {
    let file = present(&SMOLLM2_135M_INSTRUCT).join(SMOLLM2_135M_INSTRUCT.files[0].name);
    let bytes = std::fs::read(file).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    let num = |k: &str| g.get(k).and_then(Value::as_u64).unwrap_or_else(|| panic!("{k}"));
    assert_eq!(num("llama.block_count"), 30);
    assert_eq!(num("llama.embedding_length"), 576);
    assert_eq!(num("llama.attention.head_count"), 9);
    assert_eq!(num("llama.attention.head_count_kv"), 3);
    assert_eq!(num("llama.feed_forward_length"), 1536);
    let tokens = g.get("tokenizer.ggml.tokens").and_then(Value::as_array).unwrap();
    assert_eq!(tokens.len(), 49_152);
    assert_eq!(g.get("tokenizer.ggml.model").and_then(Value::as_str), Some("gpt2"));
    assert!(g.get("tokenizer.ggml.merges").and_then(Value::as_array).is_some_and(|m| !m.is_empty()));
    let template = g.get("tokenizer.chat_template").and_then(Value::as_str).unwrap();
    assert!(template.contains("<|im_start|>"), "{template}");
    let embed = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embed.dims, [576, 49_152]);
    assert!(g.tensors.iter().any(|t| t.kind == TensorType::Q4_1));
    assert_eq!(g.tensors.iter().filter(|t| t.name.ends_with("attn_q.weight")).count(), 30);
    // The index accounts for nearly the whole file (the rest is header, metadata and alignment).
    let covered: u64 = g.tensors.iter().map(|t| t.size).sum();
    assert!(covered > bytes.len() as u64 / 10 * 9, "{covered} of {}", bytes.len());
}

/// MiniLM's weights load as the encoder its config describes (6 layers, 384 wide, 12 heads), with the same values
/// the reference reads (`safetensors` Python package on the same file: `tests/fixtures/minilm_weights.json`).
#[test]
fn the_minilm_weights_load_as_its_config_says() {
    use neurolov_models::bert::{BertConfig, BertWeights};
    let dir = present(&ALL_MINILM_L6_V2);
    let config = BertConfig::parse(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!((config.hidden_size, config.num_hidden_layers, config.num_attention_heads), (384, 6, 12));
    assert_eq!((config.intermediate_size, config.vocab_size, config.max_position_embeddings), (1536, 30522, 512));
    let w = BertWeights::load(config, &std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap();
    assert_eq!(w.layers.len(), 6);
    assert_eq!(w.layers[5].intermediate.0.shape, [1536, 384]);
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/minilm_weights.json")).unwrap();
    for case in fixture["values"].as_array().unwrap() {
        let t = match case["tensor"].as_str().unwrap() {
            "embeddings.word_embeddings.weight" => &w.word_embeddings,
            "embeddings.position_embeddings.weight" => &w.position_embeddings,
            "encoder.layer.5.output.LayerNorm.weight" => &w.layers[5].output_norm.0,
            "encoder.layer.0.attention.self.query.weight" => &w.layers[0].query.0,
            other => panic!("no case for {other}"),
        };
        let at = case["at"].as_u64().unwrap() as usize;
        let bits: Vec<u64> = t.data[at..at + 8].iter().map(|v| u64::from(v.to_bits())).collect();
        let want: Vec<u64> = case["bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
        assert_eq!(bits, want, "{case}");
    }
    // Another model's file is refused by shape, not misread.
    let small = BertConfig { hidden_size: 768, ..w.config.clone() };
    let err = BertWeights::load(small, &std::fs::read(dir.join("model.safetensors")).unwrap()).unwrap_err();
    assert!(err.to_string().contains("the config needs"), "{err}");
}

/// Weights dequantized here equal llama.cpp's reference (`gguf` Python package, `gguf.quants.dequantize`) bit for bit
/// on the first values of rows of the Q8_0 embedding, Q4_1 projections and F32 norms, and in sum over whole rows.
#[test]
fn smollm2_weights_dequantize_as_llama_cpp_does() {
    let file = present(&SMOLLM2_135M_INSTRUCT).join(SMOLLM2_135M_INSTRUCT.files[0].name);
    let bytes = std::fs::read(file).unwrap();
    let g = Gguf::parse(&bytes).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/smollm2_dequant.json")).unwrap();
    for case in fixture["rows"].as_array().unwrap() {
        let t = g.tensor(case["tensor"].as_str().unwrap()).unwrap();
        assert_eq!(
            format!("{:?}", t.kind).to_uppercase().replace('_', ""),
            case["type"].as_str().unwrap().replace('_', "")
        );
        let (per_block, block_bytes) = t.kind.block();
        let row_bytes = (t.dims[0] / per_block * block_bytes) as usize;
        let row = case["row"].as_u64().unwrap() as usize;
        let data = g.tensor_bytes(t);
        let values = dequantize(t.kind.quant_type().unwrap(), &data[row * row_bytes..(row + 1) * row_bytes]).unwrap();
        assert_eq!(values.len() as u64, case["len"].as_u64().unwrap());
        let bits: Vec<u64> = values[..16].iter().map(|v| u64::from(v.to_bits())).collect();
        let want: Vec<u64> = case["first_bits"].as_array().unwrap().iter().map(|b| b.as_u64().unwrap()).collect();
        assert_eq!(bits, want, "{case}");
        let sum: f64 = values.iter().map(|&v| f64::from(v)).sum();
        let sum_sq: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((sum - case["sum"].as_f64().unwrap()).abs() < 1e-9, "{case}: sum {sum}");
        assert!((sum_sq - case["sum_sq"].as_f64().unwrap()).abs() < 1e-9, "{case}: sum of squares {sum_sq}");
    }
}
