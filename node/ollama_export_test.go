package node

// OllamaErrorShape is ollamaErrorShape, for the tests of node_test.
var OllamaErrorShape = ollamaErrorShape
