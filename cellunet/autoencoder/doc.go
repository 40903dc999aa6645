// Package autoencoder is scDiffusion's gene-expression autoencoder
// (VAE/VAE_model.py, VAE/VAE_train.py; ../../shared/spec/scdiffusion.md §5):
// a deterministic encoder/decoder between log1p-normalised expression
// [N,G] and unit-L2 latents [N,128], trained with MSE, then frozen to encode
// the training cells for the diffusion backbone and to decode generated
// latents back to expression.
//
// # Architecture
//
// Encoder: L = len(Hidden) blocks Dropout → Linear → BatchNorm1d → PReLU
// (G→1024→1024→1024 by default), then Linear(1024,128) and F.normalize
// (row L2, eps 1e-12). Decoder: Linear(128,1024) → BN → PReLU, two blocks
// Dropout → Linear → BN → PReLU, then Linear(1024,G); ReLU only when
// decoding for output (never in the training loss). BatchNorm eps 1e-5,
// momentum 0.1, PReLU one slope initialised to 0.25. Tensor names are the
// reference's state_dict keys (encoder.network.*, decoder.network.*,
// including running_mean, running_var and num_batches_tracked), created in
// its registration order, so a reference checkpoint loads strictly and a
// seeded initialisation equals PyTorch's. G = 13,431 gives 31,995,133
// parameters (128 MB).
//
// # BatchNorm modes
//
// The reference never calls .eval(): every encode and decode normalises
// with the batch statistics of the rows in that call (and mutates the
// running statistics, which are never saved again). Outputs therefore
// depend on what is encoded or decoded together. BNMode makes the choice
// explicit:
//
//   - Dataset (default, = the reference): each BatchNorm uses the exact
//     mean and biased variance of all rows of the logical call — the whole
//     data set for EncodeAll; all requested latents plus optional reference
//     latents (bnRef) for DecodeAll, of which only the requested rows are
//     returned. Chunked evaluation computes them layer by layer: pass k
//     accumulates the statistics of BN_k over every row with BN_0..BN_{k−1}
//     already fixed. Accumulators are float64 per-feature mean and M2 (sum of
//     squared deviations) merged across chunks with Chan et al.'s parallel
//     update, which stays exact where raw Σx² − n·mean² would cancel.
//     Statistics of a single chunk are never used, so results do not depend
//     on the chunk size (to ~1e-7 relative).
//   - Running: PyTorch eval mode with the checkpoint's running statistics
//     (accumulated over 128-row training batches); every row is processed
//     independently. Standard inference, but not the reference's numbers.
//   - Training: train mode, for training only (Model.Loss, Train).
//
// Inference never updates running statistics.
//
// # Memory and cost of EncodeAll / DecodeAll
//
// Both run under no-grad in chunks of ChunkRows rows (default 4,096) and
// densify one chunk of the RowSource at a time. Device peak ≈ weights
// (128 MB) + one input chunk (chunk×G×4 B: 220 MB for 4,096×13,431) + a few
// chunk×1024 activations (16.8 MB each; the statistics pass holds one
// float64 copy, 33.6 MB) — about 0.4 GB, against the reference's 6.5 GB
// one-pass encode with autograd. Host: the output (N×128×4 B, 35 MB for
// 69,249 cells; DecodeAll streams chunk×G to a callback instead) plus one
// staging chunk.
//
// Dataset mode with L BatchNorm layers needs L statistics passes and a
// final pass. Without the activation cache, pass k re-reads the input and
// recomputes layers 0..k, so the input is densified L+1 times and the first
// (G×1024) Linear — the dominant cost — runs L+1 = 4 times. With
// InferOptions.CacheActivations (on in DefaultInferOptions) each layer's
// pre-BatchNorm activations of all rows are kept on the host as float32
// [N,1024] (284 MB for 69,249 cells; two such buffers while consecutive
// widths differ), so the input is read once and every layer computed once,
// at the price of copying one chunk×1024 block to and from the device per
// layer. Running mode is a single pass.
//
// # Checkpoints
//
// Train writes {SaveDir}/model_seed={seed}_step={step}.pt (torch.save
// format, the full state_dict with BatchNorm buffers, written atomically)
// when step % CheckpointFreq == 0 and at the last step; file step=k holds
// the parameters after k+1 updates. Next to each it writes the sidecar
// state_seed={seed}_step={step}.safetensors (AdamW moments, data order,
// RNG states) from which Resume continues bit-exactly. genes.txt is the
// caller's. Load and Model.LoadCheckpoint read .pt or .safetensors
// state_dicts and reject a gene-count mismatch with both numbers.
//
// # Conventions
//
// Tensors are float32, row-major, on the model's store device. Tensor-level
// methods (Encode, Decode, Loss) panic with *cgotorch.Error on tensor
// errors like cgotorch's ops, and their results join the scope of their
// input; everything else returns errors. The model's tensors are owned by
// its nn.Store.
package autoencoder
