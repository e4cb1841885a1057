// Package apierror writes the node API's error answers, one JSON shape
// for every route: {"error":{"code":"…","message":"…"}}.
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
	} `json:"error"`
}

// Write answers status with code and msg.
func Write(w http.ResponseWriter, status int, code, msg string) {
	var e Body
	e.Error.Code, e.Error.Message = code, msg
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(e)
}
