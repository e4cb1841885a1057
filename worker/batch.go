package worker

import (
	"context"
	"log/slog"
	"runtime"
	"sync/atomic"

	"github.com/rbee-project/rbee/model/engine"
)

// batcher is the worker's step loop (continuous batching): one goroutine
// owns an engine.Batch and advances every running generation together, one
// forward pass per step, so the weights are read once per step however many
// slots are generating. Generations join between steps (a slot's session
// starts a Sequence and hands it over) and leave when they are done, their
// client is gone (the context ends: the slot is free again after the next
// step at the latest) or their consumer stopped reading. Each request
// samples with its own parameters and seed in its own Session; the tokens
// of a step go to the request's goroutine through a channel large enough
// for the whole generation, so a slow client never holds up the loop.
type batcher struct {
	b    *engine.Batch
	log  *slog.Logger
	join chan *genJob
	quit chan struct{}
	done chan struct{}
	// ctx bounds a step's exchange with a pipeline's later stages; close
	// cancels it, so a step waiting on a stage does not hold it up.
	ctx    context.Context
	cancel context.CancelFunc
	// steps counts forward passes, advanced the sequences they advanced
	// (written by the loop, read by anyone: /v1/info).
	steps, advanced atomic.Int64
}

// BatchStats are the step loop's counters since the worker started:
// forward passes of generations, and the generations they advanced
// together (their ratio is the mean batch).
type BatchStats struct {
	Steps         int64 `json:"steps"`
	SequenceSteps int64 `json:"sequence_steps"`
}

// stats returns the counters; safe while the loop runs.
func (bt *batcher) stats() BatchStats {
	return BatchStats{Steps: bt.steps.Load(), SequenceSteps: bt.advanced.Load()}
}

// genJob is one generation handed to the batcher.
type genJob struct {
	ctx context.Context
	seq *engine.Sequence
	// out receives the generated tokens; the batcher closes it when the
	// generation has left the loop (res and err are set before).
	out chan engine.Token
	res engine.Result
	err error
	// abandoned is set by the consumer when it stops reading (its emit
	// failed): the generation leaves at the next step.
	abandoned atomic.Bool
}

// newBatcher starts the step loop of m.
func newBatcher(m *engine.Model, log *slog.Logger) *batcher {
	bt := makeBatcher(m, log, 0)
	go bt.run()
	return bt
}

// makeBatcher returns a batcher whose loop is not running yet; joinQueue
// generations can be submitted before it runs (tests fill a first step).
func makeBatcher(m *engine.Model, log *slog.Logger, joinQueue int) *batcher {
	ctx, cancel := context.WithCancel(context.Background())
	return &batcher{
		ctx: ctx, cancel: cancel,
		b:    m.NewBatch(),
		log:  log,
		join: make(chan *genJob, joinQueue),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
}

// close stops the loop; generations still in it end with engine.ErrClosed.
func (bt *batcher) close() {
	bt.cancel()
	close(bt.quit)
	<-bt.done
}

// submit hands j to the loop; false when the loop has stopped.
func (bt *batcher) submit(j *genJob) bool {
	select {
	case bt.join <- j:
		return true
	case <-bt.done:
		return false
	}
}

func (j *genJob) end(err error) {
	j.res, j.err = j.seq.Result(), err
	close(j.out)
}

func (bt *batcher) run() {
	defer close(bt.done)
	var active []*genJob
	var seqs []*engine.Sequence
	defer func() {
		for _, j := range active {
			j.seq.Cancel()
			j.end(engine.ErrClosed)
		}
	}()
	for {
		if len(active) == 0 {
			select {
			case j := <-bt.join:
				active = append(active, j)
			case <-bt.quit:
				return
			}
		}
	joins:
		for {
			select {
			case j := <-bt.join:
				active = append(active, j)
			case <-bt.quit:
				return
			default:
				break joins
			}
		}
		// Leave: clients gone or consumers that stopped reading.
		kept := active[:0]
		for _, j := range active {
			if err := j.ctx.Err(); err != nil || j.abandoned.Load() {
				j.seq.Cancel()
				j.end(err)
				continue
			}
			kept = append(kept, j)
		}
		clear(active[len(kept):])
		active = kept
		if len(active) == 0 {
			continue
		}
		seqs = seqs[:0]
		for _, j := range active {
			seqs = append(seqs, j.seq)
		}
		err := bt.b.StepContext(bt.ctx, seqs)
		clear(seqs)
		bt.steps.Add(1)
		bt.advanced.Add(int64(len(active)))
		if err != nil {
			bt.log.Error("batched step failed", "err", err, "sequences", len(active))
			for _, j := range active {
				j.seq.Cancel()
				j.end(err)
			}
			clear(active)
			active = active[:0]
			continue
		}
		kept = active[:0]
		for _, j := range active {
			for _, t := range j.seq.Tokens() {
				j.out <- t // never blocks: out holds the whole generation
			}
			if j.seq.Done() {
				j.end(j.seq.Err())
				continue
			}
			kept = append(kept, j)
		}
		clear(active[len(kept):])
		active = kept
		// Let the handlers stream this step's tokens before the next
		// step: a worker confined to its threads' cores may have no
		// other processor for them.
		runtime.Gosched()
	}
}
