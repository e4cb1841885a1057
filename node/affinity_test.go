package node_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/stretchr/testify/require"
)

// TestChatTurnsMeetTheirWorker: two nodes, a worker of the model on each
// (one slot each, so a worker holds one conversation's cache). Each chat's
// turns alternate between the two nodes, which route independently, and
// every later turn meets the worker that served the first and reuses its
// cached prefix, as the worker reports it: tokens_cached in an infer job's
// result, prompt_tokens_details.cached_tokens in the OpenAI usage. By load
// alone each node sent its turns to its own worker (ties go local), and
// every second turn paid its whole prompt again.
func TestChatTurnsMeetTheirWorker(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns worker processes")
	}
	c := servingCluster(t, 2)
	spawn(t, c.Nodes[0], "node0", 1)
	spawn(t, c.Nodes[1], "node1", 1)
	waitSchedulable(t, c, 2)
	for i := range 6 {
		via, other := c.Nodes[i%2], c.Nodes[(i+1)%2]
		first := map[string]string{"role": "user", "content": fmt.Sprintf("Chat %d. Lily and Ben went to the park to play with a big red ball and a little dog.", i)}
		turn1, answer1 := infer(t, via, map[string]any{"messages": []map[string]string{first}, "max_tokens": 6})

		// The second turn, through the other node's OpenAI API.
		oc := openai.NewClient(option.WithBaseURL(other.URL()+"/v1/"), option.WithAPIKey("unused-on-loopback"))
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cc, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
			Model: "stories260k",
			Messages: []openai.ChatCompletionMessageParamUnion{
				openai.UserMessage(first["content"]),
				openai.AssistantMessage(answer1),
				openai.UserMessage("Then what happened?"),
			},
			MaxTokens:   openai.Int(6),
			Temperature: openai.Float(0),
		})
		cancel()
		require.NoError(t, err)
		require.GreaterOrEqual(t, cc.Usage.PromptTokensDetails.CachedTokens, int64(turn1.TokensIn-2),
			"chat %d: the second turn (via %s) met the worker holding the first (%s on %s): cached tokens of %d", i, other.Name(), turn1.WorkerID, turn1.Node, cc.Usage.PromptTokens)

		// The third turn, through the first node again.
		turn3, _ := infer(t, via, map[string]any{"messages": []map[string]string{
			first, {"role": "assistant", "content": answer1}, {"role": "user", "content": "Then what happened?"},
			{"role": "assistant", "content": cc.Choices[0].Message.Content}, {"role": "user", "content": "And then?"},
		}, "max_tokens": 6})
		require.Equal(t, turn1.WorkerID, turn3.WorkerID, "chat %d", i)
		require.GreaterOrEqual(t, turn3.TokensCached, int(cc.Usage.PromptTokens)-2, "chat %d", i)
	}
}
