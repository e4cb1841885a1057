package catalog_test

import (
	"context"
	"fmt"
	"os"

	"github.com/rbee-project/rbee/model/catalog"
	"github.com/rbee-project/rbee/model/hf"
	"github.com/rbee-project/rbee/model/hf/hubtest"
	"github.com/rbee-project/rbee/model/quant"
)

// How the node wires model_download: parse the ref, fetch with a Hub client
// (endpoint and token come from the node's config: HF_ENDPOINT, HF_TOKEN),
// a PeerSource and a progress callback that feeds the job's events.
func Example() {
	hub := hubtest.New() // a real node passes https://huggingface.co
	defer hub.Close()
	model, _ := hubtest.GGUF("llama", 4096, quant.Q4_K, 1)
	hub.AddFile("acme/tiny-GGUF", "tiny.Q4_K_M.gguf", model)

	dir, _ := os.MkdirTemp("", "models")
	defer os.RemoveAll(dir)
	cat, err := catalog.New(catalog.DefaultConfig(dir))
	if err != nil {
		panic(err)
	}
	defer cat.Close()

	cfg := hf.DefaultConfig()
	cfg.Endpoint = hub.URL()
	client, _ := hf.New(cfg)

	ref, err := catalog.ParseRef("hf:acme/tiny-GGUF:Q4_K_M")
	if err != nil {
		panic(err)
	}
	e, err := cat.Fetch(context.Background(), ref, catalog.FetchOptions{
		HF:       client,
		Progress: func(p catalog.Progress) { /* emit a progress event: p.Done, p.Total, p.Rate, p.ETA */ },
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(e.ID, e.Quantization, e.Architecture, e.ContextLength, e.Source)
	fmt.Println(e.Ref)
	// Output:
	// hf--acme--tiny-gguf--tiny.q4_k_m Q4_K llama 4096 hf
	// hf:acme/tiny-GGUF/tiny.Q4_K_M.gguf
}
