"""pipecat's prebuilt client is served with local media, so it needs no internet.

The page check and the refusal of an unknown client build are plain HTTP and
unit tests. The local media layer itself (``static/local-media.js``) runs in
Debian's headless Chromium with a fake microphone playing speech: it opens,
measures, mutes, switches and closes the microphone the way daily-js's call
object would for pipecat's DailyMediaManager. The whole client talking to the
assistant over WebRTC is in test_browser.py.
"""

import time

import httpx
import pytest
from helpers.speech import silence, synthesize, write_wav

from app_helpers import free_port
from chromium_cdp import CHROMIUM, Chromium
from pipecat_app.config import PiperTTSConfig
from pipecat_app.endpoints.prebuilt_client import offline_index


def test_root_leads_to_the_prebuilt_client_loaded_through_local_media(app):
    root = httpx.get(f"{app.url}/", timeout=5, follow_redirects=True)
    page = httpx.get(f"{app.url}/client/", timeout=5)

    assert root.status_code == 200
    assert str(root.url) == f"{app.url}/client/"
    assert 'import { installLocalMedia } from "./local-media.js"' in page.text
    assert '<script type="module" crossorigin src=' not in page.text
    entry = page.text.split('import * as client from "')[1].split('"')[0]
    assert httpx.get(f"{app.url}/client/{entry[2:]}", timeout=5).status_code == 200
    media = httpx.get(f"{app.url}/client/local-media.js", timeout=5)
    assert media.status_code == 200
    assert media.headers["content-type"].startswith("text/javascript")
    assert "export function installLocalMedia" in media.text


@pytest.mark.parametrize(
    "index",
    [
        "<html><head></head><body></body></html>",
        '<script type="module" src="./assets/index-a.js"></script>'
        '<script type="module" src="./assets/index-b.js"></script>',
    ],
    ids=["no entry", "two entries"],
)
def test_a_client_build_without_exactly_one_entry_script_is_refused(index):
    with pytest.raises(RuntimeError, match="exactly one entry script"):
        offline_index(index)


# Runs LocalMediaCall the way DailyMediaManager does and returns what it saw.
LOCAL_MEDIA_SCENARIO = """
(async () => {
  const { LocalMediaCall } = await import('/client/local-media.js');
  const call = new LocalMediaCall();
  const events = [];
  const names = ['track-started', 'track-stopped', 'selected-devices-updated', 'camera-error'];
  for (const name of names) {
    call.on(name, (e) => events.push(
      [e.action, e.track ? e.track.kind : (e.devices ? e.devices.mic.deviceId : e.error.type)]));
  }
  const levels = [];
  call.on('local-audio-level', (e) => levels.push(e.audioLevel));

  const opened = new Promise((resolve) => call.on('selected-devices-updated', resolve));
  await call.startCamera({ startVideoOff: true, startAudioOff: false });
  const openedBehind = !call.participants().local.tracks.audio.persistentTrack;
  const infos = (await opened).devices;
  const first = call.participants().local.tracks.audio.persistentTrack;
  await call.startLocalAudioLevelObserver(50);
  await new Promise((resolve) => setTimeout(resolve, 1500));

  call.setLocalAudio(false);
  const muted = [first.enabled, call.localAudio(), call.participants().local.tracks.audio.state];
  call.setLocalAudio(true);
  const unmuted = [first.enabled, call.localAudio(), call.participants().local.tracks.audio.state];

  const { devices } = await call.enumerateDevices();
  const other = devices.find((d) => d.kind === 'audioinput' && d.deviceId !== 'default');
  const switched = await call.setInputDevicesAsync({ audioDeviceId: other.deviceId });
  const second = call.participants().local.tracks.audio.persistentTrack;
  const speaker = devices.find((d) => d.kind === 'audiooutput' && d.deviceId !== 'default');
  const output = await call.setOutputDeviceAsync({ outputDeviceId: speaker.deviceId });

  await call.leave();
  return {
    openedBehind, mic: infos.mic.label, level: Math.max(...levels), muted, unmuted,
    first: first.readyState, wanted: other.deviceId, switched: switched.mic.deviceId,
    second: second.getSettings().deviceId, speaker: [speaker.deviceId, output.speaker.deviceId],
    afterLeave: [second.readyState, call.localAudio(), call.isLocalAudioLevelObserverRunning()],
    events,
  };
})()
"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make deps)")
def test_local_media_opens_measures_mutes_switches_and_closes_the_microphone(app, tmp_path):
    speech = synthesize("Testing the microphone level.", PiperTTSConfig(provider="piper"))
    wav = write_wav(tmp_path / "speech.wav", speech + silence(0.5))
    chromium = Chromium(wav, tmp_path / "profile", free_port())
    try:
        chromium.open(f"{app.url}/health")
        time.sleep(0.5)
        seen = chromium.evaluate(LOCAL_MEDIA_SCENARIO)
    finally:
        chromium.close()

    # A Connect click while the browser asks for the microphone must not hang
    # (pipecat's DailyMediaManager.connect() does when initialize() has not ended).
    assert seen["openedBehind"], "startCamera waited for the microphone to open"
    assert seen["mic"], seen
    assert seen["level"] > 0.01, "the level observer heard nothing from a microphone playing speech"
    assert seen["muted"] == [False, False, "off"]
    assert seen["unmuted"] == [True, True, "playable"]
    assert seen["first"] == "ended", "switching microphones leaves the first one open"
    assert seen["switched"] == seen["wanted"] == seen["second"]
    assert seen["speaker"][0] == seen["speaker"][1]
    assert seen["afterLeave"] == ["ended", False, False]
    assert seen["events"] == [
        ["track-started", "audio"],
        ["selected-devices-updated", "default"],  # the microphone opened
        ["track-stopped", "audio"],  # muted
        ["track-started", "audio"],  # unmuted
        ["track-stopped", "audio"],  # the first microphone, switched away from
        ["track-started", "audio"],  # the second
        ["selected-devices-updated", seen["wanted"]],
        ["track-stopped", "audio"],  # left
    ]
    assert chromium.requests_outside(app.url) == []
