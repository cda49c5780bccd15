"""The reference's fixed prompts (spec §6.3)."""

#: Positive prompt used by the reference for every video.
DEFAULT_PROMPT = (
    "4K ultra HD, surround motion, realistic tone, panoramic shot, wide-angle view, cinematic quality"
)

#: The English rendering of Wan's default negative prompt, as the reference uses it.
DEFAULT_NEGATIVE_PROMPT = (
    "Bright tones, overexposed, static, blurred details, subtitles, style, works, paintings, images, static, "
    "overall gray, worst quality, low quality, JPEG compression residue, ugly, incomplete, extra fingers, "
    "poorly drawn hands, poorly drawn faces, deformed, disfigured, misshapen limbs, fused fingers, still picture, "
    "messy background, three legs, many people in the background, walking backwards"
)

#: CFG scale, number of steps, sigma shift, fps and seed of the reference.
DEFAULT_GUIDANCE_SCALE = 5.0
DEFAULT_NUM_INFERENCE_STEPS = 25
DEFAULT_SHIFT = 5.0
DEFAULT_FPS = 15
DEFAULT_SEED = 0
DEFAULT_HEIGHT = 512
DEFAULT_WIDTH = 512
DEFAULT_NUM_FRAMES = 49
