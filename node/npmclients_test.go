package node_test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// npmScript drives a node with the unmodified npm clients users run: the
// openai package (models, chat, chat stream, completions, embeddings) and
// ollama-js (tags, chat stream, generate). It prints what they got as JSON.
const npmScript = `
import OpenAI from 'openai';
import { Ollama } from 'ollama';
const base = process.env.RBEE_URL, key = process.env.RBEE_KEY;
const out = {};
const oa = new OpenAI({ baseURL: base + '/v1', apiKey: key });
out.models = (await oa.models.list()).data.map(m => m.id);
const ask = { model: 'stories260k', messages: [{ role: 'user', content: 'Once upon a time' }], max_tokens: 8, temperature: 0 };
const cc = await oa.chat.completions.create(ask);
out.chat = cc.choices[0].message.content;
out.finish = cc.choices[0].finish_reason;
let s = '';
for await (const ch of await oa.chat.completions.create({ ...ask, stream: true })) s += ch.choices[0]?.delta?.content ?? '';
out.chatStream = s;
out.completion = (await oa.completions.create({ model: 'stories260k', prompt: 'Once upon a time', max_tokens: 8, temperature: 0 })).choices[0].text;
out.embLen = (await oa.embeddings.create({ model: 'stories260k', input: 'a bee' })).data[0].embedding.length;
const ol = new Ollama({ host: base, headers: { Authorization: 'Bearer ' + key } });
out.tags = (await ol.list()).models.map(m => m.name);
let oc = '';
for await (const part of await ol.chat({ model: 'stories260k', messages: ask.messages, stream: true, options: { temperature: 0, num_predict: 8 } })) oc += part.message.content;
out.ollamaChat = oc;
out.ollamaGen = (await ol.generate({ model: 'stories260k', prompt: 'Once upon a time', options: { temperature: 0, num_predict: 8 } })).response;
console.log(JSON.stringify(out));
`

// TestNPMClients runs the openai and ollama npm packages, as installed by
// npm, against a node serving the bundled model. It skips where Node.js or
// npm is missing or the npm registry cannot be reached.
func TestNPMClients(t *testing.T) {
	if testing.Short() {
		t.Skip("installs npm packages and spawns a worker")
	}
	for _, tool := range []string{"node", "npm"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed: the npm clients (openai, ollama) are not tested", tool)
		}
	}
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	install := exec.CommandContext(ctx, "npm", "install", "--no-audit", "--no-fund", "--silent", "--fetch-retries=1", "--fetch-timeout=30000", "openai@6", "ollama@0.6")
	install.Dir = dir
	if out, err := install.CombinedOutput(); err != nil {
		t.Skipf("npm install openai ollama failed (no registry here?): %v: %s", err, out)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "clients.mjs"), []byte(npmScript), 0o644))

	c := servingCluster(t, 1)
	spawn(t, c.Nodes[0], "node0", 2)
	waitSchedulable(t, c, 1)
	run := exec.CommandContext(ctx, "node", "clients.mjs")
	run.Dir = dir
	run.Env = append(os.Environ(), "RBEE_URL="+c.Nodes[0].URL(), "RBEE_KEY="+c.Nodes[0].AdminKey())
	out, err := run.Output()
	var stderr string
	if ee, ok := err.(*exec.ExitError); ok {
		stderr = string(ee.Stderr)
	}
	require.NoError(t, err, "node clients.mjs: %s", stderr)
	var got struct {
		Models                []string
		Chat, ChatStream      string
		Finish                string
		Completion            string
		EmbLen                int
		Tags                  []string
		OllamaChat, OllamaGen string
	}
	require.NoError(t, json.Unmarshal(out, &got), "%s", out)
	t.Logf("npm clients saw: %s", strings.TrimSpace(string(out)))
	require.NotEmpty(t, got.Models)
	require.NotEmpty(t, got.Chat)
	require.Equal(t, got.Chat, got.ChatStream, "streamed and whole greedy answers differ")
	require.Equal(t, "length", got.Finish)
	require.NotEmpty(t, got.Completion)
	require.Positive(t, got.EmbLen)
	require.Contains(t, strings.Join(got.Tags, " "), "stories260k")
	require.Equal(t, got.Chat, got.OllamaChat, "the Ollama chat and the OpenAI chat are the same greedy generation")
	require.Equal(t, got.Completion, got.OllamaGen, "the Ollama generate and the OpenAI completion are the same greedy generation")
}
