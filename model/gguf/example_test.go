package gguf_test

import (
	"fmt"
	"io"
	"log"

	"github.com/rbee-project/rbee/model/gguf"
	"github.com/rbee-project/rbee/model/quant"
)

func ExampleOpen() {
	f, err := gguf.Open("../../testdata/model/stories260K.gguf")
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	arch, _ := f.String("general.architecture")
	layers, _ := f.Uint(arch + ".block_count")
	t, _ := f.Tensor("token_embd.weight")
	data, _ := f.TensorData(t)
	fmt.Println(f.Version, arch, layers, len(f.Tensors))
	fmt.Println(t.Name, t.Dims, t.Type, len(data))
	// Output:
	// 3 llama 5 48
	// token_embd.weight [64 512] F32 131072
}

func ExampleWriter() {
	w := gguf.NewWriter()
	_ = w.AddKV("general.architecture", "llama")
	_ = w.AddKV("llama.block_count", uint32(2))
	weights := make([]byte, 2*34) // one row of 64 values: two Q8_0 blocks
	if err := w.AddTensor("w", quant.Q8_0, []uint64{64, 1}, weights); err != nil {
		log.Fatal(err)
	}
	n, err := w.WriteTo(io.Discard) // or w.WriteFile(path), atomically
	fmt.Println(n, err)
	// Output: 256 <nil>
}
