package engine_test

import (
	"context"
	"fmt"
	"os"

	"github.com/rbee-project/rbee/model/engine"
)

// Example loads a model, renders a chat prompt and streams a sampled reply.
func Example() {
	m, err := engine.Load("model.gguf", engine.Options{}) // all cores, model's context (≤ 4096)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer m.Close()
	prompt, err := m.ChatTokens(context.Background(), []engine.Message{{Role: "user", Content: "Tell me a story."}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	s := m.NewSession() // one per conversation; reuses its cached prefix
	res, err := s.Generate(context.Background(), engine.GenerateRequest{
		Prompt:    prompt,
		MaxTokens: 256,
		Sample:    engine.SampleParams{Temperature: 0.8, TopK: 40, TopP: 0.95, MinP: 0.05, Seed: 42},
		Stop:      []string{"\nUser:"},
	}, func(t engine.Token) error {
		fmt.Print(t.Text)
		return nil
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	fmt.Printf("\n[%d prompt + %d generated tokens, stop: %s]\n", res.PromptTokens, res.CompletionTokens, res.StopReason)
}
