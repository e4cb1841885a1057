// Package apierror writes the node API's error answers, one JSON shape
// for every route: {"error":{"code":"…","message":"…","type":"…"}}, the
// shape of OpenAI's errors (type "invalid_request_error" for a 4xx,
// "server_error" for a 5xx), so an OpenAI client reads any of them.
package apierror

import (
	"encoding/json"
	"net/http"
)

// Body is the JSON body of a non-2xx API answer.
type Body struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Type    string `json:"type,omitempty"`
	} `json:"error"`
}

// Write answers status with code and msg.
func Write(w http.ResponseWriter, status int, code, msg string) {
	var e Body
	e.Error.Code, e.Error.Message, e.Error.Type = code, msg, Type(status)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}

// Type is OpenAI's error type for an HTTP status.
func Type(status int) string {
	if status >= 500 {
		return "server_error"
	}
	return "invalid_request_error"
}
