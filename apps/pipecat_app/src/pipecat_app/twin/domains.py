"""The app's own example utterances for the well-known routing domains.

The router describes each domain by example utterances (the approach of
semantic-router): an expert's own ``examples`` (Consul meta ``example_N``, or
``[[twin.experts]] examples``) when it has some, else these, else its
description. They are what a user would say to that expert, in a user's
words, not a description of the expert.
"""

from __future__ import annotations

DEFAULT_EXAMPLES: dict[str, tuple[str, ...]] = {
    "general": (
        "What's the capital of Australia?",
        "Tell me a joke.",
        "How are you doing today?",
        "Can you help me plan a weekend trip to the mountains?",
        "What should I name my new puppy?",
        "Give me a recipe for a quick vegetarian dinner.",
        "Who wrote Pride and Prejudice?",
        "How many kilometres are in a mile?",
        "What's a good gift for my sister's birthday?",
        "Explain why the sky is blue.",
        "Summarise the plot of Hamlet in two sentences.",
        "How do I stay motivated when I work from home?",
        "What happened in the French Revolution?",
        "Recommend a good science fiction book.",
        "How long should I boil an egg?",
        "Write a short poem about autumn.",
    ),
    "code": (
        "Write a Python function that reverses a string.",
        "Why does my code throw a NullPointerException?",
        "How do I undo the last git commit?",
        "Explain this stack trace from my program.",
        "Write a bash script that renames all files in a folder.",
        "What's the difference between a list and a tuple in Python?",
        "Help me write a SQL query that joins two tables.",
        "My Docker container exits immediately, how do I debug it?",
        "Write a regular expression that matches an email address.",
        "How do I make an HTTP request in JavaScript?",
        "Review this function and suggest improvements.",
        "What does this compiler error mean?",
        "How do I install a package with pip?",
        "Write unit tests for this class.",
        "Which sorting algorithm is fastest for nearly sorted data?",
        "How do I read a JSON file in Rust?",
    ),
    "home": (
        "Turn off the lights in the living room.",
        "Set the thermostat to 21 degrees.",
        "Is the front door locked?",
        "Dim the bedroom lamp to thirty percent.",
        "Turn on the heating in the bathroom.",
        "Close the blinds in the kitchen.",
        "Start the robot vacuum.",
        "What's the temperature inside the house?",
        "Arm the alarm system, I'm leaving.",
        "Open the garage door.",
        "Switch on the coffee machine plug.",
        "Play music on the kitchen speaker.",
        "Turn the fan off in the office.",
        "Did anyone ring the doorbell while I was out?",
        "Lower the volume of the living room TV.",
        "Make all the lights warm white.",
    ),
    "vision": (
        "What do you see?",
        "Describe what's in front of the camera.",
        "Look at this and tell me what it is.",
        "Read the text on this label for me.",
        "What colour is the shirt I'm wearing?",
        "How many people are in the picture?",
        "What am I holding in my hand?",
        "Is there anything on the table in front of me?",
        "Describe this photo.",
        "What does the sign in the image say?",
        "Can you see my keys anywhere?",
        "What breed is the dog in this picture?",
        "Tell me what's written on this whiteboard.",
        "Does this plant in the image look healthy?",
        "What's on the screen I'm pointing the camera at?",
        "Identify the objects on my desk.",
    ),
}
