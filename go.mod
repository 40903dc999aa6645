module github.com/scdiffusion/gotorch-train

go 1.26.8

require github.com/nlpodyssey/gopickle v0.3.0

require golang.org/x/text v0.14.0 // indirect
