package engine

import (
	"fmt"
	"math"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

// Mixture-of-experts FFN (Mixtral as llama, qwen2moe, qwen3moe), as
// llama.cpp's build_moe_ffn runs it: a router (ffn_gate_inp) scores the
// experts of each token, a softmax makes the scores probabilities, the
// nExpertUsed most probable experts run their own SwiGLU FFN on the token
// (ffn_{gate,up,down}_exps, one matrix of each per expert, stacked in a
// 3-D tensor), and their outputs, each times its probability
// (renormalised over the chosen ones for Mixtral and qwen3moe), are
// summed in the order of choice. qwen2moe adds a shared expert whose
// output is gated by a sigmoid of its own router row.

// maxExperts bounds a file's expert counts: llama.cpp's LLAMA_MAX_EXPERTS.
const maxExperts = 512

// minExpertWeightSum is ggml_clamp's floor under the sum of the chosen
// experts' probabilities before they are renormalised (f16's smallest
// normal, llama.cpp's constant).
const minExpertWeightSum = 6.103515625e-5

// moeLayer holds one layer's experts.
type moeLayer struct {
	router               *quant.Matrix   // nExpert × dim
	gate, up, down       []*quant.Matrix // per expert: ffExp × dim, ffExp × dim, dim × ffExp
	shGate, shUp, shDown *quant.Matrix   // the shared expert (qwen2moe), or nil
	shRouter             []float32       // its gate row (dim), or nil
	// gpt-oss's biases: the router's (nExpert) and each expert's gate,
	// up and down rows (nExpert × ffExp, nExpert × ffExp, nExpert × dim);
	// nil for the others.
	routerB, gateB, upB, downB []float32
}

// readExperts reads the expert hyperparameters: nExpert 0 for a dense model.
func (m *Model) readExperts() error {
	hp := &m.hp
	var err error
	if hp.nExpert, err = m.optUint0("expert_count", 0); err != nil {
		return err
	}
	if hp.arch == "qwen2moe" || hp.arch == "qwen3moe" || hp.arch == "gpt-oss" {
		if hp.nExpert == 0 {
			return fmt.Errorf("%w: %s without %s", ErrBadModel, hp.arch, m.key("expert_count"))
		}
	}
	if hp.nExpert == 0 {
		return nil
	}
	if hp.nExpertUsed, err = m.needUint("expert_used_count"); err != nil {
		return err
	}
	if hp.nExpert > maxExperts || hp.nExpertUsed < 1 || hp.nExpertUsed > hp.nExpert {
		return fmt.Errorf("%w: %d experts, %d used per token", ErrBadModel, hp.nExpert, hp.nExpertUsed)
	}
	// llama.cpp: Mixtral's experts are feed_forward_length wide; qwen's
	// expert_feed_forward_length, else feed_forward_length / used.
	hp.ffExp = hp.ff // Mixtral: llama.cpp reads no expert width for llama
	if hp.arch != "llama" {
		if hp.ffExp, err = m.optUint0("expert_feed_forward_length", hp.ff/hp.nExpertUsed); err != nil {
			return err
		}
	}
	if hp.ffExp < 1 {
		return fmt.Errorf("%w: expert_feed_forward_length %d", ErrBadModel, hp.ffExp)
	}
	hp.normExperts = hp.arch != "qwen2moe"
	if hp.arch == "qwen2moe" {
		if hp.ffShared, err = m.optUint0("expert_shared_feed_forward_length", hp.ff); err != nil {
			return err
		}
	}
	return nil
}

// experts maps the per-expert rows×cols matrices of a 3-D tensor (GGUF
// dims [cols, rows, n]): each is a view of its share of the file.
func (m *Model) experts(name string, n, rows, cols int) ([]*quant.Matrix, error) {
	t, ok := m.tensor(name)
	if !ok {
		return nil, fmt.Errorf("%w: missing tensor %s", ErrBadModel, name)
	}
	if len(t.Dims) != 3 || t.Dims[0] != uint64(cols) || t.Dims[1] != uint64(rows) || t.Dims[2] != uint64(n) {
		return nil, fmt.Errorf("%w: tensor %s has dims %v, want [%d %d %d]", ErrBadModel, name, t.Dims, cols, rows, n)
	}
	data, rb, err := m.weightData(t, cols)
	if err != nil {
		return nil, err
	}
	per := rb * rows
	out := make([]*quant.Matrix, n)
	if m.src == nil {
		m.src = make(map[*quant.Matrix]*gguf.TensorInfo)
	}
	for e := range out {
		out[e] = &quant.Matrix{Type: t.Type, Rows: rows, Cols: cols, Data: data[e*per : (e+1)*per]}
		// Each expert is a repack source of its own: its share of the
		// tensor, so that releasing it after the repack releases only
		// the pages it alone covers.
		st := *t
		st.Name = fmt.Sprintf("%s[expert %d]", t.Name, e)
		st.Offset, st.Size = t.Offset+uint64(e*per), uint64(per)
		m.src[out[e]] = &st
	}
	return out, nil
}

// loadExperts fills l.moe for the layer with prefix p.
func (m *Model) loadExperts(l *layer, p string) error {
	hp := &m.hp
	moe := &moeLayer{}
	var err error
	if moe.router, err = m.matrix(p+"ffn_gate_inp.weight", hp.nExpert, hp.dim); err != nil {
		return err
	}
	if moe.gate, err = m.experts(p+"ffn_gate_exps.weight", hp.nExpert, hp.ffExp, hp.dim); err != nil {
		return err
	}
	if moe.up, err = m.experts(p+"ffn_up_exps.weight", hp.nExpert, hp.ffExp, hp.dim); err != nil {
		return err
	}
	if moe.down, err = m.experts(p+"ffn_down_exps.weight", hp.nExpert, hp.dim, hp.ffExp); err != nil {
		return err
	}
	if hp.arch == "gpt-oss" {
		if moe.routerB, err = m.vector(p+"ffn_gate_inp.bias", hp.nExpert, false); err != nil {
			return err
		}
		for _, b := range []struct {
			dst   *[]float32
			name  string
			width int
		}{{&moe.gateB, "ffn_gate_exps.bias", hp.ffExp}, {&moe.upB, "ffn_up_exps.bias", hp.ffExp}, {&moe.downB, "ffn_down_exps.bias", hp.dim}} {
			if *b.dst, err = m.table(p+b.name, hp.nExpert, b.width); err != nil {
				return err
			}
		}
	}
	if hp.arch == "qwen2moe" {
		steps := []struct {
			dst        **quant.Matrix
			name       string
			rows, cols int
		}{
			{&moe.shGate, "ffn_gate_shexp.weight", hp.ffShared, hp.dim},
			{&moe.shUp, "ffn_up_shexp.weight", hp.ffShared, hp.dim},
			{&moe.shDown, "ffn_down_shexp.weight", hp.dim, hp.ffShared},
		}
		for _, s := range steps {
			if *s.dst, err = m.matrix(p+s.name, s.rows, s.cols); err != nil {
				return err
			}
		}
		if moe.shRouter, err = m.vector(p+"ffn_gate_inp_shexp.weight", hp.dim, false); err != nil {
			return err
		}
	}
	l.moe = moe
	return nil
}

// moeBuffers are a Batch's scratch for expert FFNs, sized for its rows.
type moeBuffers struct {
	probs   []float32 // rows × nExpert: router probabilities
	used    []bool    // nExpert: pickTop's scratch
	chosen  []int32   // rows × nExpertUsed: the experts picked, in order
	weights []float32 // rows × nExpertUsed: their weights
	out     []float32 // rows × nExpertUsed × dim: each pick's weighted output
	in      []float32 // rows × dim: the rows routed to one expert, gathered
	down    []float32 // rows × dim: that expert's outputs
	routed  []int32   // rows: which (row, pick) each gathered row is
	shared  []float32 // rows × ffShared × 2 (qwen2moe's shared expert)
}

func (mb *moeBuffers) ensure(hp *hparams, n int) {
	k := hp.nExpertUsed
	if len(mb.chosen) >= n*k {
		return
	}
	mb.probs = make([]float32, n*hp.nExpert)
	mb.used = make([]bool, hp.nExpert)
	mb.chosen = make([]int32, n*k)
	mb.weights = make([]float32, n*k)
	mb.out = make([]float32, n*k*hp.dim)
	mb.in = make([]float32, n*hp.dim)
	mb.down = make([]float32, n*hp.dim)
	mb.routed = make([]int32, n)
	if hp.ffShared > 0 {
		mb.shared = make([]float32, 2*n*hp.ffShared)
	}
}

// moeFFN sets dst (n rows of dim) to the layer's expert FFN of h (n rows).
// hb and hb2 hold at least n × ffExp values.
func (b *Batch) moeFFN(l *layer, h, dst, hb, hb2 []float32, n int) {
	m, hp := b.m, &b.m.hp
	pool, dim, ne, k := m.pool, hp.dim, hp.nExpert, hp.nExpertUsed
	mb := &b.moe
	mb.ensure(hp, n)
	probs := mb.probs[:n*ne]
	quant.MatMul(pool, probs, l.moe.router, h, n)
	for i := 0; i < n; i++ {
		p := probs[i*ne : (i+1)*ne]
		addBias(p, l.moe.routerB)
		if !hp.oai {
			quant.Softmax(p, 1)
		}
		pickTop(p, mb.chosen[i*k:(i+1)*k], mb.used)
		w := mb.weights[i*k : (i+1)*k]
		var sum float64
		for j, e := range mb.chosen[i*k : (i+1)*k] {
			w[j] = p[e]
			sum += float64(w[j])
		}
		if hp.oai {
			// The chosen experts' logits, softmaxed among themselves.
			quant.Softmax(w, 1)
		}
		if hp.normExperts {
			s := max(float32(sum), minExpertWeightSum)
			for j := range w {
				w[j] /= s
			}
		}
	}
	for e := 0; e < ne; e++ {
		rows := 0
		for t, c := range mb.chosen[:n*k] {
			if int(c) != e {
				continue
			}
			i := t / k
			copy(mb.in[rows*dim:(rows+1)*dim], h[i*dim:(i+1)*dim])
			mb.routed[rows] = int32(t)
			rows++
		}
		if rows == 0 {
			continue
		}
		g, u := hb[:rows*hp.ffExp], hb2[:rows*hp.ffExp]
		gateUp := [...]quant.Product{{Dst: g, M: l.moe.gate[e]}, {Dst: u, M: l.moe.up[e]}}
		quant.MatMuls(pool, mb.in[:rows*dim], rows, gateUp[:])
		if l.moe.gateB != nil {
			addBias(g, l.moe.gateB[e*hp.ffExp:(e+1)*hp.ffExp])
			addBias(u, l.moe.upB[e*hp.ffExp:(e+1)*hp.ffExp])
		}
		if hp.oai {
			swigluOAI(g, u)
		} else {
			b.activate(g, u)
		}
		quant.MatMul(pool, mb.down[:rows*dim], l.moe.down[e], g, rows)
		if l.moe.downB != nil {
			addBias(mb.down[:rows*dim], l.moe.downB[e*dim:(e+1)*dim])
		}
		for r := 0; r < rows; r++ {
			t := int(mb.routed[r])
			w := mb.weights[t]
			o := mb.out[t*dim : (t+1)*dim]
			for d, v := range mb.down[r*dim : (r+1)*dim] {
				o[d] = v * w
			}
		}
	}
	for i := 0; i < n; i++ {
		row := dst[i*dim : (i+1)*dim]
		copy(row, mb.out[i*k*dim:(i*k+1)*dim])
		for j := 1; j < k; j++ {
			addTo(row, mb.out[(i*k+j)*dim:(i*k+j+1)*dim])
		}
	}
	if l.moe.shGate != nil {
		b.sharedExpert(l, h, dst, n)
	}
}

// sharedExpert adds qwen2moe's shared expert to dst: its FFN of h, times
// the sigmoid of its gate row's product with h.
func (b *Batch) sharedExpert(l *layer, h, dst []float32, n int) {
	hp, mb := &b.m.hp, &b.moe
	dim, ff := hp.dim, hp.ffShared
	g, u := mb.shared[:n*ff], mb.shared[n*ff:2*n*ff]
	gateUp := [...]quant.Product{{Dst: g, M: l.moe.shGate}, {Dst: u, M: l.moe.shUp}}
	quant.MatMuls(b.m.pool, h, n, gateUp[:])
	swiglu(g, u)
	out := mb.down[:n*dim]
	quant.MatMul(b.m.pool, out, l.moe.shDown, g, n)
	for i := 0; i < n; i++ {
		var dot float32
		for d, v := range h[i*dim : (i+1)*dim] {
			dot += v * l.moe.shRouter[d]
		}
		s := float32(1 / (1 + math.Exp(-float64(dot))))
		row := dst[i*dim : (i+1)*dim]
		for d, v := range out[i*dim : (i+1)*dim] {
			row[d] += v * s
		}
	}
}

// activate is the FFN gate's activation on g, times u.
func (b *Batch) activate(g, u []float32) {
	if b.m.hp.gelu {
		geglu(g, u)
		return
	}
	swiglu(g, u)
}

// pickTop writes the indexes of the len(dst) largest p into dst, largest
// first (ties: the lower index first; ggml's argsort is std::sort, whose
// order of equal probabilities is its own). used (len(p) long, all false)
// marks what is taken and is left all false again: O(len(dst)·len(p)),
// not the square of the picks times the experts.
func pickTop(p []float32, dst []int32, used []bool) {
	for j := range dst {
		best := -1
		for e, v := range p {
			if used[e] {
				continue
			}
			if best < 0 || v > p[best] {
				best = e
			}
		}
		dst[j] = int32(best)
		used[best] = true
	}
	for _, e := range dst {
		used[e] = false
	}
}
