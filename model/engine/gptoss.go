package engine

import (
	"fmt"

	"github.com/rbee-project/rbee/model/quant"
)

// gpt-oss (OpenAI's open-weight mixtures of experts), as llama.cpp's
// llm_build_openai_moe_iswa builds it: llama's block with biases on q, k, v
// and the attention output, an attention sink per head (a learned logit
// that joins the head's softmax and weighs no value), every other layer
// from the first attending through a sliding window, NEOX RoPE (YaRN from
// the file), and an expert FFN after post_attention_norm (its name for the
// FFN's input norm) whose router and experts have biases, whose experts
// are chosen by the router's logits and weighted by the softmax of the
// chosen logits, and whose gate goes through swiglu_oai.

// swigluOAI's constants (llama.cpp's build_moe_ffn for LLM_FFN_SWIGLU_OAI_MOE).
const (
	oaiAlpha = 1.702
	oaiLimit = 7.0
)

// readGPTOSS sets gpt-oss's hyperparameters (the common ones and the
// experts read).
func (m *Model) readGPTOSS() error {
	hp := &m.hp
	if hp.nExpert == 0 {
		return fmt.Errorf("%w: gpt-oss without %s", ErrBadModel, m.key("expert_count"))
	}
	if err := m.readGPTOSSWindow(); err != nil {
		return err
	}
	hp.normExperts, hp.oai = false, true
	return nil
}

// readGPTOSSWindow sets gpt-oss's sliding window (required) and its
// pattern: every other layer from the first; none for a window of 0.
func (m *Model) readGPTOSSWindow() error {
	w, err := m.needUint("attention.sliding_window")
	if err != nil {
		return err
	}
	m.hp.swaWindow, m.hp.swaPattern = w, 2
	if w == 0 {
		m.hp.swaPattern = 0
	}
	return nil
}

// table dequantises a 2-D tensor of rows rows of cols values (GGUF dims
// [cols, rows]) into one slice, row after row: gpt-oss's per-expert
// biases.
func (m *Model) table(name string, rows, cols int) ([]float32, error) {
	t, ok := m.tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: missing tensor %s", ErrBadModel, name)
	}
	if len(t.Dims) != 2 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) {
		return nil, fmt.Errorf("%w: tensor %s has dims %v, want [%d %d]", ErrBadModel, name, t.Dims, cols, rows)
	}
	data, err := m.file.TensorData(t)
	if err != nil {
		return nil, fmt.Errorf("%w: tensor %s: %w", ErrBadModel, name, err)
	}
	out := make([]float32, rows*cols)
	if err := quant.Dequantize(t.Type, data, out); err != nil {
		return nil, fmt.Errorf("%w: tensor %s: %w", ErrBadModel, name, err)
	}
	return out, nil
}

// swigluOAI sets g = swiglu_oai(g, u) as ggml computes it, each step in
// float32: x = min(g, limit), y = clamp(u, -limit, limit),
// x / (1 + e^(-alpha·x)) · (y + 1).
func swigluOAI(g, u []float32) {
	u = u[:len(g)]
	var e [64]float32
	for len(g) > 0 {
		c := min(len(g), len(e))
		for i, v := range g[:c] {
			e[i] = oaiAlpha * -min(v, oaiLimit)
		}
		quant.ExpF32s(e[:c], e[:c])
		for i, v := range g[:c] {
			x := min(v, oaiLimit)
			y := max(min(u[i], oaiLimit), -oaiLimit)
			g[i] = x / (1 + e[i]) * (y + 1)
		}
		g, u = g[c:], u[c:]
	}
}
