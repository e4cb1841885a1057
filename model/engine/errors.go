// Package engine runs llama-family GGUF models (architectures llama,
// qwen2, qwen3, qwen2moe, qwen3moe, gemma, gemma2, gemma3 and phi3,
// experts included) on the CPU: the forward pass
// with a per-Session KV cache (f16 by default, or f32) and batched prompt
// processing, the sampling chain, the generation loop with
// stop strings, and chat templates.
//
// A Model is loaded once (weights stay memory-mapped) and is safe for
// concurrent use; each Session owns a KV cache and scratch buffers and is used
// by one goroutine at a time. See DESIGN.md.
package engine

import "errors"

// Sentinel errors; functions wrap them with %w and add detail.
var (
	// ErrContextOverflow: the prompt plus one generated token does not fit
	// the context window.
	ErrContextOverflow = errors.New("engine: prompt does not fit the context window")
	// ErrEmptyPrompt: a generation request without any prompt token.
	ErrEmptyPrompt = errors.New("engine: empty prompt")
	// ErrBadRequest: a request field is out of range (token id, sampling
	// parameter, max tokens).
	ErrBadRequest = errors.New("engine: bad request")
	// ErrUnsupportedModel: the GGUF file's architecture or shape is not one
	// this engine runs.
	ErrUnsupportedModel = errors.New("engine: unsupported model")
	// ErrBadModel: the GGUF file lacks a required key or tensor, or a tensor
	// has the wrong shape.
	ErrBadModel = errors.New("engine: malformed model")
	// ErrClosed: the Model was closed.
	ErrClosed = errors.New("engine: model closed")
	// ErrFileChanged: a file the Model maps (the model file or its repack
	// cache file) was truncated or written in place while the Model had it
	// mapped: a read of the mapping faulted (SIGBUS), or the file's size or
	// modification time changed (a shrink inside its last page reads as
	// zeros, a rewrite as other weights, without a fault). The Model's
	// weights are gone; only loading the file again helps. A rename over
	// the file's name or its deletion is not a change: the Model keeps the
	// file it mapped.
	ErrFileChanged = errors.New("engine: the model file was truncated or changed while in use")
	// ErrTemplate: the model's chat template went over its render budget
	// (model/jinja's limits: recursion depth, steps, output, string or
	// memory size, loop length, deadline), so ChatPrompt and ChatTokens
	// return no prompt rather than a fallback; the wrapped
	// *jinja.LimitError names the limit. Only the model file can fix it.
	ErrTemplate = errors.New("engine: chat template exceeded its budget")
	// ErrConstraint: the request's Constraint allowed no token of the
	// vocabulary (a grammar that this vocabulary cannot continue here).
	ErrConstraint = errors.New("engine: the output constraint allows no token")
)
