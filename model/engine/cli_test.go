package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/rbee-project/rbee/model/synth"
)

// TestCLI builds the rbee binary and runs the engine commands
// (cmd/rbee/engine_cmds.go) against the fixtures. Skipped with -short: the
// build links the whole cluster stack.
func TestCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cmd/rbee")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	bin := filepath.Join(t.TempDir(), "rbee")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "../../cmd/rbee")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	require.NoError(t, err, "%s", out)

	run := func(args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, bin, args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		require.NoError(t, cmd.Run(), "rbee %v: %s", args, stderr.String())
		return stdout.Bytes()
	}

	raw, err := os.ReadFile("../../testdata/model/expected/stories260K.upstream.json")
	require.NoError(t, err)
	var up struct {
		Cases []upstreamCase `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &up))
	for _, c := range up.Cases {
		switch {
		case c.ExpectedText != "" && c.Prompt == "" && c.Steps == 200:
			// Greedy from BOS: stdout is the text only (the first piece
			// keeps its space; no newline is added when stdout is a pipe).
			got := run("model", "run", storiesPath, "--temperature", "0", "-n", "200")
			require.Equal(t, " "+c.ExpectedText, string(got))
		case c.FirstGeneratedIDs != nil:
			var res struct {
				PromptIDs    []int32 `json:"prompt_ids"`
				GeneratedIDs []int32 `json:"generated_ids"`
				Text         string  `json:"text"`
			}
			got := run("model", "run", storiesPath, "--prompt", c.Prompt, "--temperature", "0", "-n", "3", "-o", "json")
			require.NoError(t, json.Unmarshal(got, &res))
			require.Equal(t, c.FirstGeneratedIDs, res.GeneratedIDs)
			require.Equal(t, c.FirstGeneratedText, res.Text)
			var wantPrompt []int32
			require.NoError(t, json.Unmarshal(c.DerivedPromptIDs, &wantPrompt))
			require.Equal(t, wantPrompt, res.PromptIDs)
		case c.ExpectedCounts != nil:
			var ids map[string][]int32
			require.NoError(t, json.Unmarshal(c.DerivedPromptIDs, &ids))
			for text, want := range ids {
				var got []int32
				require.NoError(t, json.Unmarshal(run("model", "tokenize", storiesPath, "--text", text, "--bos", "-o", "json"), &got))
				require.Equal(t, want, got)
				require.NoError(t, json.Unmarshal(run("model", "tokenize", storiesPath, "--text", text, "-o", "json"), &got))
				require.Equal(t, want[1:], got, "no BOS without --bos")
			}
		}
	}

	var ins Inspection
	require.NoError(t, json.Unmarshal(run("model", "inspect", storiesPath, "-o", "json"), &ins))
	require.Len(t, ins.Tensors, 48)
	require.Contains(t, string(run("model", "inspect", storiesPath)), "(512 elements)")

	synthPath := filepath.Join(t.TempDir(), "q.gguf")
	run("model", "synth", synthPath, "--arch", "qwen2", "--dim", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
		"--ff", "128", "--vocab", "400", "--type", "q8_0", "--ctx", "64")
	var res struct {
		GeneratedIDs []int32 `json:"generated_ids"`
	}
	require.NoError(t, json.Unmarshal(run("model", "run", synthPath, "--prompt", "the cat", "-n", "4", "--temperature", "0", "-o", "json"), &res))
	require.Len(t, res.GeneratedIDs, 4)

	// A chat template over its budget: the error is printed and rbee
	// exits 1 (the old engine died with a fatal stack overflow).
	cfg := synth.DefaultConfig()
	cfg.ChatTemplate = `{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}`
	hostile := filepath.Join(t.TempDir(), "hostile.gguf")
	require.NoError(t, synth.Write(hostile, cfg))
	cmd := exec.CommandContext(ctx, bin, "model", "run", hostile, "--chat", "--prompt", "hi", "-n", "2")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "stderr: %s", stderr.String())
	require.Equal(t, 1, ee.ExitCode(), "stderr: %s", stderr.String())
	require.Contains(t, stderr.String(), "error: engine: chat template exceeded its budget")
	require.Contains(t, stderr.String(), "recursion_depth")
	require.NotContains(t, stderr.String(), "fatal error")
	require.Empty(t, stdout.String())

	var b BenchResult
	require.NoError(t, json.Unmarshal(run("bench", "engine", "--model", synthPath, "-p", "8", "-n", "8", "--reps", "1", "--threads", "1"), &b))
	require.Equal(t, 1, b.Threads)
	require.Positive(t, b.PP.Median)
	require.Positive(t, b.TG.Median)
	require.Equal(t, "Q8_0", b.Quantization)
	require.Empty(t, b.Parallel)

	b = BenchResult{}
	require.NoError(t, json.Unmarshal(run("bench", "engine", "--model", synthPath, "-p", "8", "-n", "8", "--reps", "1", "--threads", "1", "--parallel", "1", "--parallel", "3"), &b))
	require.Len(t, b.Parallel, 2)
	require.Equal(t, 3, b.Parallel[1].Sequences)
	require.Positive(t, b.Parallel[1].TG.Median)
	require.Positive(t, b.Parallel[1].TGRatio)
}
