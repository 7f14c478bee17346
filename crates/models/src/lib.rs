//! The inference engine (issue 12): pre-trained models from pinned packages (`catalog`, `fetch`), their files
//! (`gguf`, safetensors in `bert`), tokenizers with the reference's ids (`tokenizer`), the forward passes written
//! once as named ops against a [`device::Device`] — the CPU path or wgpu — (`bert`, `llama`), generation with chat
//! template and seeded sampling (`generate`), the loaded models (`engine`) and their benchmarks (`bench`).

pub mod bench;
pub mod bert;
pub mod catalog;
pub mod device;
pub mod engine;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod proof;
pub mod serve;
pub mod tokenizer;

pub use neurolov_kernels::quant;
