package worker

// Continuing an answer. A chat whose final message is the assistant's,
// without tool calls, is an unfinished answer the client wants extended
// (Open WebUI's "Continue response", SillyTavern's continue, any prefill):
// the prompt ends right after that message's text and the model's answer
// continues it, as llama-server and Ollama do by default and vLLM does
// with continue_final_message. The answer is the continuation alone (the
// client has the beginning). For a think-tag or harmony model the text
// is the answer's content: the template writes the message as it writes
// a past answer (Qwen3's think block closed before it, empty or holding
// the message's reasoning_content; gpt-oss's final channel, after an
// analysis message of its thinking), so the continuation is content, not
// reasoning; the model does not reason again. The text stays plain text:
// it writes no special token (engine.Model.ChatTokensContinue).

// refuseShapedContinuation refuses continuing a message (open) when a
// grammar shapes the answer from its first token (a JSON response_format,
// a forced tool call): the grammar writes a whole document after the
// message's text, so text and continuation together would not parse.
func refuseShapedContinuation(open, schema, forced bool) *apiError {
	switch {
	case open && schema:
		return badRequest("response_format", "invalid_value",
			"a JSON response_format shapes a whole answer and cannot continue a final assistant message: send continue_final_message false for a new turn")
	case open && forced:
		return badRequest("tool_choice", "invalid_value",
			"a forced tool call is a whole answer and cannot continue a final assistant message: send continue_final_message false for a new turn")
	}
	return nil
}

// continuation decides whether a chat's answer continues its final
// message. By default it does when that message is the assistant's and
// has no tool calls. vLLM's fields choose explicitly:
// continue_final_message true asks for it (refused, 400, without such a
// message), false opens a new turn after it; add_generation_prompt true
// opens a new turn, false is taken only with a continuation (rbee renders
// no conversation without a turn for the answer). Both true is refused,
// as vLLM refuses it.
func (g *genRequest) continuation() (bool, *apiError) {
	last := g.Messages[len(g.Messages)-1]
	open := last.Role == "assistant" && len(last.ToolCalls) == 0
	cont, gen := g.ContinueFinalMessage, g.AddGenerationPrompt
	if cont != nil && *cont {
		if gen != nil && *gen {
			return false, badRequest("continue_final_message", "invalid_value",
				"continue_final_message and add_generation_prompt cannot both be true: the answer either continues the final message or opens a new turn")
		}
		if !open {
			return false, badRequest("continue_final_message", "invalid_value",
				"continue_final_message needs a final assistant message without tool calls: the answer continues its text")
		}
		return true, nil
	}
	if (cont != nil && !*cont) || (gen != nil && *gen) {
		open = false
	}
	if gen != nil && !*gen && !open {
		return false, badRequest("add_generation_prompt", "invalid_value",
			"add_generation_prompt false is taken only to continue a final assistant message (the answer needs a turn to go in)")
	}
	return open, nil
}
