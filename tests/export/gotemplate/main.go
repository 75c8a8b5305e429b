// Renders Ollama chat templates the way Ollama does, for Forge's tests.
//
//	gotemplate TEMPLATE_FILE DATA_FILE   renders one template over {"Messages": [{"Role": ..., "Content": ...}]}
//	gotemplate -batch                    reads [{"template": ..., "messages": [...]}, ...] on stdin and
//	                                     writes [{"output": ..., "error": ...}, ...] on stdout
//
// Like Ollama's template.Execute: the template is parsed with missingkey=zero, consecutive messages of one
// role are merged with "\n\n", all system messages are joined into .System, and the data is a map holding
// System, Messages ([]*Message) and an empty Response. No function beyond Go's builtins is defined (Ollama adds
// "json"), so a template that parses here uses nothing specific to one version of Ollama.
package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/template"
)

type Message struct {
	Role    string
	Content string
}

type Data struct {
	Messages []Message
}

type Case struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
}

type Result struct {
	Output string `json:"output"`
	Error  string `json:"error,omitempty"`
}

func collate(msgs []Message) (string, []*Message) {
	var system []string
	var collated []*Message
	for i := range msgs {
		m := msgs[i]
		if m.Role == "system" {
			system = append(system, m.Content)
		}
		if len(collated) > 0 && collated[len(collated)-1].Role == m.Role {
			collated[len(collated)-1].Content += "\n\n" + m.Content
		} else {
			collated = append(collated, &m)
		}
	}
	return strings.Join(system, "\n\n"), collated
}

func render(text string, msgs []Message) (string, error) {
	tmpl, err := template.New("").Option("missingkey=zero").Parse(text)
	if err != nil {
		return "", err
	}
	system, collated := collate(msgs)
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{"System": system, "Messages": collated, "Response": ""})
	return b.String(), err
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "-batch" {
		input, err := io.ReadAll(os.Stdin)
		if err != nil {
			fail(err)
		}
		var cases []Case
		if err := json.Unmarshal(input, &cases); err != nil {
			fail(err)
		}
		results := make([]Result, len(cases))
		for i, c := range cases {
			out, err := render(c.Template, c.Messages)
			results[i].Output = out
			if err != nil {
				results[i].Error = err.Error()
			}
		}
		if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
			fail(err)
		}
		return
	}
	if len(os.Args) != 3 {
		fail(fmt.Errorf("usage: gotemplate TEMPLATE_FILE DATA_FILE | gotemplate -batch"))
	}
	text, err := os.ReadFile(os.Args[1])
	if err != nil {
		fail(err)
	}
	raw, err := os.ReadFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	var data Data
	if err := json.Unmarshal(raw, &data); err != nil {
		fail(err)
	}
	out, err := render(string(text), data.Messages)
	if err != nil {
		fail(err)
	}
	os.Stdout.WriteString(out)
}
