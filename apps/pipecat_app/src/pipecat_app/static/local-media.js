/*
 * Local media for pipecat's prebuilt SmallWebRTC client, so it works without internet.
 *
 * The prebuilt client (pipecat-ai-small-webrtc-prebuilt) handles the microphone
 * through @pipecat-ai/small-webrtc-transport's DailyMediaManager, which asks
 * daily-js for a call object (`Daily.getCallInstance() ?? Daily.createCallObject()`).
 * A daily-js call object loads Daily's "call machine" bundle from Daily's CDN
 * before it touches a device; that bundle is not in daily-js's npm package
 * (nor in react-native-daily-js's, nor in the prebuilt wheel), so on a network
 * without internet the client never gets a microphone.
 *
 * installLocalMedia() makes `Daily.getCallInstance()` return a LocalMediaCall:
 * the part of daily-js's DailyCall API (names and event shapes from daily-js's
 * index.d.ts) that DailyMediaManager uses, done with the browser's own
 * getUserMedia, enumerateDevices and Web Audio. The audio still travels over
 * SmallWebRTC's own peer connection to the app, as before; nothing is loaded
 * from outside the app. Screen sharing is not offered.
 */

const NO_TRACK = { subscribed: true, state: "off", off: { byUser: true } };

/**
 * Why the browser will not give this page the microphone, or null when it may.
 * Browsers hand out the microphone only in a secure context: HTTPS, or
 * localhost. Over plain HTTP from another machine `navigator.mediaDevices`
 * does not even exist, and getUserMedia would fail without a word.
 */
export function microphoneRefusal() {
  if (window.isSecureContext && navigator.mediaDevices?.getUserMedia) return null;
  return (
    `The browser refuses this page the microphone: ${location.origin} is not a secure ` +
    "context (plain HTTP from another machine). Open the assistant over HTTPS " +
    "(https://…, see its README), or on its own machine as http://localhost."
  );
}

/** Show `text` at the top of the page, for pages that have no place for it. */
function showBanner(text) {
  const banner = document.createElement("div");
  banner.id = "microphone-refused";
  banner.setAttribute("role", "alert");
  banner.textContent = text;
  banner.style.cssText =
    "position:fixed;top:0;left:0;right:0;z-index:2147483647;padding:0.8rem 1rem;" +
    "background:#b00020;color:#fff;font:1rem system-ui,sans-serif";
  document.body.prepend(banner);
}

/** Daily's `camera-error` payload for a failed getUserMedia. */
function deviceError(kind, error) {
  const media = kind === "audio" ? "audio" : "video";
  const msg = `${error.name}: ${error.message}`;
  if (error.name === "NotAllowedError" || error.name === "SecurityError") {
    return { type: "permissions", msg, blockedMedia: [media], blockedBy: "user" };
  }
  if (error.name === "NotFoundError" || error.name === "OverconstrainedError") {
    return { type: "not-found", msg, missingMedia: [media] };
  }
  if (error.name === "NotReadableError") {
    return { type: kind === "audio" ? "mic-in-use" : "cam-in-use", msg };
  }
  return { type: "unknown", msg };
}

/** The subset of daily-js's DailyCall that DailyMediaManager calls, on local devices only. */
export class LocalMediaCall {
  constructor() {
    this._handlers = new Map();
    this._tracks = { audio: null, video: null };
    this._enabled = { audio: true, video: false };
    this._wanted = { audio: "", video: "" };
    this._speaker = {};
    this._level = null;
    this._watching = false;
    this._opening = { audio: null, video: null };
    this._session = 0;
  }

  on(event, handler) {
    if (!this._handlers.has(event)) this._handlers.set(event, new Set());
    this._handlers.get(event).add(handler);
    return this;
  }

  off(event, handler) {
    this._handlers.get(event)?.delete(handler);
    return this;
  }

  _emit(event, payload) {
    for (const handler of this._handlers.get(event) ?? []) {
      try {
        handler({ action: event, ...payload });
      } catch (error) {
        console.error(`[local media] ${event} handler failed`, error);
      }
    }
  }

  _trackState(kind) {
    const track = this._tracks[kind];
    if (!track) return NO_TRACK;
    const playable = this._enabled[kind] && track.readyState === "live";
    return playable
      ? { subscribed: true, state: "playable", track, persistentTrack: track }
      : { subscribed: true, state: "off", off: { byUser: true }, persistentTrack: track };
  }

  _participant() {
    return {
      local: true,
      owner: true,
      session_id: "local",
      user_id: "local",
      user_name: "",
      tracks: {
        audio: this._trackState("audio"),
        video: this._trackState("video"),
        screenAudio: NO_TRACK,
        screenVideo: NO_TRACK,
      },
    };
  }

  participants() {
    return { local: this._participant() };
  }

  localAudio() {
    return this._enabled.audio && this._tracks.audio !== null;
  }

  localVideo() {
    return this._enabled.video && this._tracks.video !== null;
  }

  localScreenAudio() {
    return false;
  }

  localScreenVideo() {
    return false;
  }

  async enumerateDevices() {
    // No devices at all where the page may not have them (microphoneRefusal).
    if (!navigator.mediaDevices) return { devices: [] };
    return { devices: await navigator.mediaDevices.enumerateDevices() };
  }

  async _deviceInfos() {
    const { devices } = await this.enumerateDevices();
    const info = (kind, deviceKind) => {
      const id = this._tracks[kind]?.getSettings().deviceId;
      return devices.find((d) => d.kind === deviceKind && d.deviceId === id) ?? {};
    };
    return { mic: info("audio", "audioinput"), camera: info("video", "videoinput"), speaker: this._speaker };
  }

  getInputDevices() {
    return this._deviceInfos();
  }

  /** Open the device of `kind` ("audio" or "video") and announce its track. */
  async _acquire(kind) {
    const wanted = this._wanted[kind];
    const session = this._session;
    const refusal = microphoneRefusal();
    if (refusal) {
      this._emit("camera-error", {
        error: { type: "permissions", msg: refusal, blockedMedia: [kind], blockedBy: "browser" },
      });
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        [kind]: wanted ? { deviceId: { exact: wanted } } : true,
      });
    } catch (error) {
      this._emit("camera-error", { error: deviceError(kind, error) });
      return;
    }
    if (session !== this._session) {
      // leave() came while the browser was opening the device.
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    this._release(kind);
    const track = stream.getTracks()[0];
    track.enabled = this._enabled[kind];
    this._tracks[kind] = track;
    if (kind === "audio" && this._level) this._level.connect(track);
    if (this._enabled[kind]) {
      this._emit("track-started", { participant: this._participant(), track, type: kind });
    }
  }

  /** Stop the device of `kind` and announce that its track stopped. */
  _release(kind) {
    const track = this._tracks[kind];
    if (!track) return;
    track.stop();
    this._tracks[kind] = null;
    this._emit("track-stopped", { participant: this._participant(), track, type: kind });
  }

  _watchDevices() {
    if (this._watching || !navigator.mediaDevices) return;
    this._watching = true;
    navigator.mediaDevices.addEventListener("devicechange", async () => {
      const { devices } = await this.enumerateDevices();
      this._emit("available-devices-updated", { availableDevices: devices });
    });
  }

  /*
   * Daily's startCamera resolves once the devices are open; this one resolves at
   * once and opens them behind (daily-js's index.d.ts: a device not acquired yet
   * is reported as {}), announcing each track with `track-started` and then
   * `selected-devices-updated`. DailyMediaManager.connect() never resolves when
   * it comes before initialize() has ended, so a Connect click while the browser
   * still asks for the microphone would otherwise hang.
   */
  async startCamera(options = {}) {
    this._enabled = { audio: !options.startAudioOff, video: options.startVideoOff === false };
    for (const kind of ["audio", "video"]) {
      if (this._enabled[kind] && !this._tracks[kind] && !this._opening[kind]) {
        this._opening[kind] = this._acquire(kind)
          .then(() => this._deviceInfos())
          .then((devices) => this._emit("selected-devices-updated", { devices }))
          .finally(() => {
            this._opening[kind] = null;
          });
      }
    }
    this._watchDevices();
    return { mic: {}, camera: {}, speaker: this._speaker };
  }

  async _setLocal(kind, enable) {
    this._enabled[kind] = enable;
    const track = this._tracks[kind];
    if (!track) {
      if (enable) await this._acquire(kind);
      return;
    }
    track.enabled = enable;
    const event = enable ? "track-started" : "track-stopped";
    this._emit(event, { participant: this._participant(), track, type: kind });
  }

  setLocalAudio(enable) {
    this._setLocal("audio", enable);
    return this;
  }

  setLocalVideo(enable) {
    this._setLocal("video", enable);
    return this;
  }

  startScreenShare() {
    console.warn("[local media] screen sharing is not available in the offline client");
  }

  stopScreenShare() {}

  async setInputDevicesAsync({ audioDeviceId, videoDeviceId } = {}) {
    for (const [kind, id] of [["audio", audioDeviceId], ["video", videoDeviceId]]) {
      if (id === undefined || id === null) continue;
      this._wanted[kind] = id === false ? "" : id;
      if (this._enabled[kind]) await this._acquire(kind);
    }
    const devices = await this._deviceInfos();
    this._emit("selected-devices-updated", { devices });
    return devices;
  }

  async setOutputDeviceAsync({ outputDeviceId }) {
    const { devices } = await this.enumerateDevices();
    const speaker = devices.find((d) => d.kind === "audiooutput" && d.deviceId === outputDeviceId);
    if (!speaker) throw new Error(`no audio output device ${outputDeviceId}`);
    for (const element of document.querySelectorAll("audio, video")) {
      if (typeof element.setSinkId === "function") await element.setSinkId(outputDeviceId);
    }
    this._speaker = speaker;
    return this._deviceInfos();
  }

  isLocalAudioLevelObserverRunning() {
    return this._level !== null;
  }

  async startLocalAudioLevelObserver(interval = 100) {
    if (this._level) return;
    this._level = new AudioLevel((audioLevel) => this._emit("local-audio-level", { audioLevel }), interval);
    if (this._tracks.audio) this._level.connect(this._tracks.audio);
    // DailyMediaManager's initialize() ends right after this: the client can connect.
    console.info("[local media] microphone level observer running");
  }

  stopLocalAudioLevelObserver() {
    this._level?.close();
    this._level = null;
  }

  async leave() {
    this._session += 1;
    this.stopLocalAudioLevelObserver();
    this._release("audio");
    this._release("video");
  }

  async destroy() {
    await this.leave();
    this._handlers.clear();
  }
}

/** RMS level (0..1) of the microphone, reported every `interval` ms. */
class AudioLevel {
  constructor(report, interval) {
    this._context = new AudioContext();
    this._analyser = this._context.createAnalyser();
    this._analyser.fftSize = 1024;
    this._samples = new Float32Array(this._analyser.fftSize);
    this._source = null;
    // A page may not start audio before the user's first gesture.
    this._resume = () => this._context.resume();
    document.addEventListener("click", this._resume, { once: true });
    this._timer = setInterval(() => {
      if (!this._source) return report(0);
      this._analyser.getFloatTimeDomainData(this._samples);
      let sum = 0;
      for (const x of this._samples) sum += x * x;
      report(Math.min(1, Math.sqrt(sum / this._samples.length)));
    }, interval);
  }

  connect(track) {
    this._source?.disconnect();
    this._source = this._context.createMediaStreamSource(new MediaStream([track]));
    this._source.connect(this._analyser);
  }

  close() {
    clearInterval(this._timer);
    document.removeEventListener("click", this._resume);
    this._source?.disconnect();
    this._context.close();
  }
}

/**
 * Make the client's daily-js hand out one LocalMediaCall instead of a call object.
 * `client` is the prebuilt client's entry module; its exports include daily-js's
 * Daily class (under a minified name, so it is found by its static methods).
 */
export function installLocalMedia(client) {
  const Daily = Object.values(client).find(
    (x) => typeof x?.getCallInstance === "function" && typeof x?.createCallObject === "function",
  );
  if (!Daily) {
    throw new Error("[local media] daily-js not found in the prebuilt client: it would load Daily's bundle from the internet");
  }
  let call = null;
  Daily.getCallInstance = () => call;
  Daily.createCallObject = () => {
    call = call ?? new LocalMediaCall();
    return call;
  };
  // DailyMediaManager asks for an existing instance first, so there must be one.
  Daily.createCallObject();
  const refusal = microphoneRefusal();
  if (refusal) {
    if (document.body) showBanner(refusal);
    else document.addEventListener("DOMContentLoaded", () => showBanner(refusal));
    console.warn(`[local media] ${refusal}`);
  }
  console.info("[local media] the prebuilt client uses local devices; nothing is loaded from the internet");
}
