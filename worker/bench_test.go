package worker

import (
	"context"
	"testing"
	"time"
)

// BenchmarkInfer measures one /v1/infer request end to end (HTTP, SSE,
// engine) on stories260K: 64 greedy tokens after "Once upon a time".
func BenchmarkInfer(b *testing.B) {
	cfg := DefaultConfig()
	cfg.ID, cfg.ModelPath, cfg.Threads, cfg.Secret = "bench", testModelPath, 1, testSecret
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.Start(ctx); err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	if err := s.WaitReady(ctx); err != nil {
		b.Fatal(err)
	}
	url := "http://" + s.Addr().String() + "/v1/infer"
	body := []byte(`{"prompt":"Once upon a time","max_tokens":64,"temperature":0}`)
	tokens := 0
	b.ResetTimer()
	for b.Loop() {
		resp, err := authed.Post(url, "application/json", bytesReader(body))
		if err != nil {
			b.Fatal(err)
		}
		rd := newSSEReader(resp.Body)
		for {
			ev, ok := rd.next()
			if !ok {
				break
			}
			if ev.Event == "token" {
				tokens++
			}
		}
		resp.Body.Close()
	}
	b.ReportMetric(float64(tokens)/b.Elapsed().Seconds(), "tokens/s")
}
