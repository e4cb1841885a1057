package node

import (
	"encoding/json"
	"strings"

	"github.com/rbee-project/rbee/worker"
)

// workerError decodes a worker's or an engine's error answer, the one
// place that does: rbee's OpenAI-shaped {"error":{"message",…}}, where an
// engine's "code" may be a number. ok is false for any other body.
func workerError(b []byte) (d worker.ErrorDetail, ok bool) {
	var eb struct {
		Error *struct {
			Message string          `json:"message"`
			Type    string          `json:"type"`
			Param   *string         `json:"param"`
			Code    json.RawMessage `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(b, &eb) != nil || eb.Error == nil || eb.Error.Message == "" {
		return d, false
	}
	d = worker.ErrorDetail{Message: eb.Error.Message, Type: eb.Error.Type, Param: eb.Error.Param}
	if err := json.Unmarshal(eb.Error.Code, &d.Code); err != nil && string(eb.Error.Code) != "null" {
		d.Code = string(eb.Error.Code) // a number
	}
	return d, true
}

// workerErrorMessage is the message of a worker's error answer: its
// OpenAI-shaped message (with the field at fault), else the text.
func workerErrorMessage(b []byte) string {
	if d, ok := workerError(b); ok {
		if d.Param != nil {
			return d.Message + " (field " + *d.Param + ")"
		}
		return d.Message
	}
	return strings.TrimSpace(string(b))
}
