// The /voice page's conversation: what the user said, what the assistant
// answered, and which expert answered and why (the routing label).
//
// It reads the RTVI messages the app sends over the peer connection's data
// channel ({"label": "rtvi-ai", "type": ..., "data": ...}): "user-input"
// (a final transcription of the user's turn), "bot-llm-started",
// "bot-llm-text" (the answer as the expert streams it; pipecat's raw-text
// successor is sent only to clients that negotiate it) and the
// "server-message" whose data has type "twin-route" (TwinService's label,
// sent once an expert has answered the turn; see twin/route_label.py) or
// "twin-turn-latency" (the end of the user's speech to the answer's first
// audio, sent once that audio has left; see session.py).

export const ROUTE_MESSAGE_TYPE = "twin-route";
// The app's message with a spoken turn's latency (session.py).
export const TURN_LATENCY_MESSAGE_TYPE = "twin-turn-latency";

function reasonText(reason, score) {
  switch (reason) {
    case "rule": return "a routing rule";
    case "similarity": return `similarity ${score === null ? "?" : score.toFixed(2)}`;
    case "follow_up": return "a follow-up";
    case "tie": return "a tie, so the default domain";
    case "fallback": return "no clear domain, so the default";
    default: return reason;
  }
}

/** One line for a routing label: who answered, why, and how soon the answer began. */
export function routeText(label) {
  const why = label.reason === "failover"
    ? `failover from ${label.failed.join(", ")} (routed by ${reasonText(label.routed, label.score)})`
    : reasonText(label.reason, label.score);
  const latency = label.latency_ms === null
    ? ""
    : ` · first words after ${(label.latency_ms / 1000).toFixed(2)} s`;
  return `answered by ${label.expert} (${label.domain}) on ${label.node} · ${why}${latency}`;
}

/** The conversation shown in ``element``; feed it every data-channel message. */
export class Conversation {
  constructor(element) {
    this.element = element;
    this.user = null;  // the user's turn being said
    this.answer = null;  // the answer to it, once one began
  }

  entry(who, kind) {
    const turn = document.createElement("div");
    turn.className = `turn ${kind}`;
    const name = document.createElement("b");
    name.textContent = `${who}: `;
    const text = document.createElement("span");
    text.className = "text";
    turn.append(name, text);
    this.element.append(turn);
    return turn;
  }

  answering() {
    if (!this.answer) this.answer = this.entry("Twin", "assistant");
    return this.answer;
  }

  note(kind, text) {
    const line = document.createElement("div");
    line.className = `note ${kind}`;
    line.textContent = text;
    this.answering().append(line);
  }

  receive(raw) {
    let message;
    try {
      message = JSON.parse(raw);
    } catch {
      return;  // not an RTVI message
    }
    if (!message || message.label !== "rtvi-ai") return;
    const data = message.data || {};
    if (message.type === "user-input" && data.final && data.text) {
      // A turn's speech may be transcribed in pieces: they join until an answer begins.
      if (!this.user || this.answer) {
        this.user = this.entry("You", "user");
        this.answer = null;
      }
      const text = this.user.querySelector(".text");
      text.textContent = `${text.textContent} ${data.text}`.trim();
    } else if (message.type === "bot-llm-started") {
      this.answer = this.entry("Twin", "assistant");
    } else if (message.type === "bot-llm-text") {
      this.answering().querySelector(".text").textContent += data.text;
    } else if (message.type === "server-message" && data.type === ROUTE_MESSAGE_TYPE) {
      this.note("route", routeText(data));
    } else if (message.type === "server-message" && data.type === TURN_LATENCY_MESSAGE_TYPE) {
      const secs = (data.latency_ms / 1000).toFixed(2);
      this.note("latency", `heard ${secs} s after you stopped speaking`);
    }
  }
}
