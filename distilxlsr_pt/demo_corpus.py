"""Build a small, synthetic Brazilian Portuguese speech corpus for offline demos and tests.

The sentences come from a small template grammar written for this project (vocabulary below) and are spoken by
espeak-ng (``-v pt-br``) with 51 "speakers" (voice variant + speed + pitch; 3 held out for the test split). Audio is
resampled to 16 kHz mono 16-bit PCM with ``sox -D`` (no dither), so two builds with the same arguments are
byte-identical.

The output uses the Hugging Face datasets ``audiofolder`` layout::

    DIR/README.md                  dataset card (synthetic data, sizes, speakers, hours)
    DIR/build_info.json            build parameters and statistics (also the "already built" marker)
    DIR/{train,validation,test}/metadata.csv   file_name,transcription,speaker_id
    DIR/{train,validation,test}/*.wav

and loads with ``datasets.load_dataset("audiofolder", data_dir=DIR)``. Test sentences and validation sentences never
occur in train, and the test split is spoken only by held-out speakers.

Example::

    python stand_ins/make_demo_corpus.py --output_dir data/demo_corpus
"""

from __future__ import annotations

import csv
import io
import json
import random
import shutil
import subprocess
import sys
import wave
from contextlib import nullcontext
from multiprocessing import Pool
from pathlib import Path

from huggingface_hub import DatasetCardData
from tqdm import tqdm

from .audio import SAMPLING_RATE
from .cards import SYNTHETIC_TAG, write_card

CORPUS_VERSION = 3  # bump when the grammar, speakers or audio pipeline change: invalidates existing builds
SPLITS = ("train", "validation", "test")
MIN_WORDS, MAX_WORDS = 3, 15

# ---------------------------------------------------------------------------------------------------------------------
# Speakers: (speaker_id, espeak-ng voice, words per minute, pitch 0-99). Variants were checked against
# `espeak-ng --voices=variant` (espeak-ng silently falls back to the plain voice for an unknown variant).
# ---------------------------------------------------------------------------------------------------------------------
EXTRA_TRAIN_VARIANTS = (
    "m2", "m4", "m8", "klatt2", "klatt3", "klatt4", "Alex", "Andrea", "Andy", "Annie", "Denis", "Gene", "Hugo",
    "Jacky", "Lee", "Mario", "Michael", "Mike", "adam", "antonio", "belinda", "benjamin", "caleb", "david", "edward",
    "gustave", "iven", "linda", "max", "michel", "miguel", "norbert", "pablo", "paul", "robert", "sandro", "steph",
    "travis", "victor",
)  # fmt: skip
SPEAKERS: tuple[tuple[str, str, int, int], ...] = (
    ("spk01", "pt-br", 150, 50),
    ("spk02", "pt-br+f2", 140, 60),
    ("spk03", "pt-br+m3", 160, 40),
    ("spk04", "pt-br+f4", 135, 55),
    ("spk05", "pt-br+Diogo", 165, 45),
    ("spk06", "pt-br+f5", 155, 65),
    ("spk07", "pt-br+m7", 135, 35),
    ("spk08", "pt-br+Henrique", 175, 50),
    ("spk09", "pt-br+klatt", 145, 45),
    # More training voices (v3): nine were too few to generalise to new voices (a teacher trained on them erred on one
    # held-out voice in two characters of five). Each gets its own speed and pitch, spread over the range above.
    *(
        (f"spk{17 + i}", f"pt-br+{variant}", 125 + (17 * i) % 61, 30 + (29 * i) % 46)
        for i, variant in enumerate(EXTRA_TRAIN_VARIANTS)
    ),
    # Held out: these speak only the test split.
    ("spk10", "pt-br+f3", 140, 70),
    ("spk11", "pt-br+marcelo", 170, 40),
    ("spk12", "pt-br+m5", 130, 55),
)
TEST_SPEAKERS = ("spk10", "spk11", "spk12")
TRAIN_SPEAKERS = tuple(s[0] for s in SPEAKERS if s[0] not in TEST_SPEAKERS)  # validation uses these too
# The free-speech set: voices heard nowhere else in the corpus.
FREE_SPEAKERS: tuple[tuple[str, str, int, int], ...] = (
    ("spk13", "pt-br+m1", 150, 45),
    ("spk14", "pt-br+f1", 145, 62),
    ("spk15", "pt-br+pedro", 160, 50),
    ("spk16", "pt-br+m6", 140, 40),
)

# ---------------------------------------------------------------------------------------------------------------------
# Vocabulary of the template grammar (written for this project; released with the corpus under CC0-1.0).
# ---------------------------------------------------------------------------------------------------------------------
# People: (text, gender).
PEOPLE = (
    ("o menino", "m"), ("a menina", "f"), ("o professor", "m"), ("a professora", "f"), ("o médico", "m"),
    ("a médica", "f"), ("o avô", "m"), ("a avó", "f"), ("o irmão", "m"), ("a irmã", "f"), ("a mãe", "f"),
    ("o pai", "m"), ("o vizinho", "m"), ("a vizinha", "f"), ("o padeiro", "m"), ("a cozinheira", "f"),
    ("o músico", "m"), ("a estudante", "f"), ("o mecânico", "m"), ("a secretária", "f"), ("o capitão", "m"),
    ("João", "m"), ("Conceição", "f"), ("Márcia", "f"), ("Antônio", "m"), ("Sebastião", "m"), ("Lúcia", "f"),
    ("Júlio", "m"), ("Inês", "f"), ("Cláudia", "f"), ("André", "m"), ("Mônica", "f"), ("Flávio", "m"),
)  # fmt: skip
# Adjectives for people: (masculine, feminine).
PEOPLE_ADJECTIVES = (
    ("cansado", "cansada"), ("feliz", "feliz"), ("atrasado", "atrasada"), ("contente", "contente"),
    ("preocupado", "preocupada"), ("ocupado", "ocupada"), ("animado", "animada"), ("tranquilo", "tranquila"),
    ("nervoso", "nervosa"), ("sozinho", "sozinha"),
)  # fmt: skip
# Things: (text, gender, kind); kind selects the verbs and adjectives that fit.
THINGS = (
    ("o pão", "m", "food"), ("a maçã", "f", "food"), ("o café", "m", "food"), ("o feijão", "m", "food"),
    ("o açúcar", "m", "food"), ("a pimenta", "f", "food"), ("o melão", "m", "food"), ("o limão", "m", "food"),
    ("a farinha", "f", "food"), ("o mamão", "m", "food"), ("a cenoura", "f", "food"), ("o pêssego", "m", "food"),
    ("a abóbora", "f", "food"), ("o pastel", "m", "food"), ("o sorvete", "m", "food"), ("o bolo", "m", "food"),
    ("o queijo", "m", "food"), ("o arroz", "m", "food"), ("o maracujá", "m", "food"), ("a goiaba", "f", "food"),
    ("o requeijão", "m", "food"), ("o pudim", "m", "food"), ("a sopa", "f", "food"), ("o suco", "m", "food"),
    ("o chá", "m", "food"), ("a manteiga", "f", "food"),
    ("o caderno", "m", "object"), ("a chave", "f", "object"), ("o relógio", "m", "object"),
    ("a câmera", "f", "object"), ("o violão", "m", "object"), ("a lâmpada", "f", "object"),
    ("o telefone", "m", "object"), ("o computador", "m", "object"), ("a bicicleta", "f", "object"),
    ("o chapéu", "m", "object"), ("a gravata", "f", "object"), ("o sapato", "m", "object"),
    ("a cadeira", "f", "object"), ("o dicionário", "m", "object"), ("a mochila", "f", "object"),
    ("o álbum", "m", "object"), ("o remédio", "m", "object"), ("a colher", "f", "object"), ("o prato", "m", "object"),
    ("a tesoura", "f", "object"), ("o fogão", "m", "object"), ("a televisão", "f", "object"),
    ("o casaco", "m", "object"), ("a carteira", "f", "object"), ("o lápis", "m", "object"),
    ("a régua", "f", "object"), ("o pião", "m", "object"),
)  # fmt: skip
THING_ADJECTIVES = {
    "food": (
        ("fresco", "fresca"), ("quente", "quente"), ("doce", "doce"), ("gostoso", "gostosa"), ("barato", "barata"),
        ("caro", "cara"), ("saboroso", "saborosa"), ("caseiro", "caseira"), ("delicioso", "deliciosa"),
        ("salgado", "salgada"), ("amargo", "amarga"), ("orgânico", "orgânica"),
    ),
    "object": (
        ("novo", "nova"), ("velho", "velha"), ("antigo", "antiga"), ("pequeno", "pequena"), ("bonito", "bonita"),
        ("econômico", "econômica"), ("pesado", "pesada"), ("útil", "útil"), ("azul", "azul"),
        ("amarelo", "amarela"), ("vermelho", "vermelha"), ("prático", "prática"), ("frágil", "frágil"),
        ("elegante", "elegante"), ("limpo", "limpa"), ("sujo", "suja"),
    ),
}  # fmt: skip
# Transitive verbs: (past 3rd person singular, infinitive, kinds of object).
TRANSITIVE_VERBS = (
    ("comprou", "comprar", "food object"), ("trouxe", "trazer", "food object"), ("vendeu", "vender", "food object"),
    ("esqueceu", "esquecer", "food object"), ("guardou", "guardar", "food object"),
    ("escolheu", "escolher", "food object"), ("comeu", "comer", "food"), ("preparou", "preparar", "food"),
    ("provou", "provar", "food"), ("dividiu", "dividir", "food"), ("pediu", "pedir", "food"),
    ("encontrou", "encontrar", "object"), ("perdeu", "perder", "object"), ("levou", "levar", "object"),
    ("consertou", "consertar", "object"), ("lavou", "lavar", "object"), ("limpou", "limpar", "object"),
    ("emprestou", "emprestar", "object"), ("procurou", "procurar", "object"), ("mostrou", "mostrar", "object"),
)  # fmt: skip
# Intransitive verbs: (past 3rd person singular, infinitive).
INTRANSITIVE_VERBS = (
    ("chegou", "chegar"), ("saiu", "sair"), ("trabalhou", "trabalhar"), ("dormiu", "dormir"), ("cantou", "cantar"),
    ("dançou", "dançar"), ("estudou", "estudar"), ("almoçou", "almoçar"), ("jantou", "jantar"),
    ("correu", "correr"), ("descansou", "descansar"), ("nadou", "nadar"), ("voltou", "voltar"),
    ("esperou", "esperar"), ("acordou", "acordar"),
)  # fmt: skip
# Places where a thing can be ("está na cozinha") and cities/states (only for people).
LOCAL_PLACES = (
    "na padaria", "no mercado", "na praça", "na estação", "no escritório", "na cozinha", "no jardim", "na farmácia",
    "no hospital", "na biblioteca", "na feira", "na fazenda", "na escola", "no salão", "no pátio", "na rodoviária",
    "no açougue", "na lanchonete", "no porão", "na varanda", "no restaurante", "na sala",
)  # fmt: skip
CITIES = (
    "em São Paulo", "no Rio de Janeiro", "em Belém", "em Goiânia", "em Brasília", "em Maceió", "em Florianópolis",
    "no Paraná", "no Amapá", "em São Luís", "no Maranhão", "no Ceará", "no Piauí", "em Cuiabá", "na Bahia",
    "em Vitória", "em Niterói", "em Três Corações",
)  # fmt: skip
PAST_TIMES = (
    "ontem", "anteontem", "ontem à noite", "na semana passada", "no mês passado", "no sábado passado",
    "no ano passado", "hoje de manhã",
)  # fmt: skip
FUTURE_TIMES = (
    "amanhã", "amanhã cedo", "depois de amanhã", "na próxima semana", "no próximo mês", "no próximo sábado",
    "no fim de semana", "durante as férias",
)  # fmt: skip
ANY_TIMES = (
    "hoje", "de manhã", "à tarde", "à noite", "às três horas", "às sete e meia", "depois do almoço", "antes do jantar",
    "no domingo", "na sexta",
)  # fmt: skip

# Lexicon sentences: without them every clip comes from the grammar above (319 word types), and a recogniser trained on
# it learns that closed list of words instead of how Portuguese is spelled. A share of the train and validation
# sentences is therefore drawn from Debian's Brazilian Portuguese word list (package `wbrazilian`, about 275k word
# forms) between frequent function words: not grammatical, but every letter-to-sound rule of espeak-ng occurs.
WORD_LIST = Path("/usr/share/dict/brazilian")
LEXICON_ALPHABET = set("abcdefghijklmnopqrstuvwxyzáàâãéêíóôõúüç")
FUNCTION_WORDS = (
    "o", "a", "os", "as", "um", "uma", "de", "do", "da", "dos", "das", "em", "no", "na", "e", "que", "com", "por",
    "para", "mas", "se", "não", "muito", "mais", "também", "ele", "ela", "eles", "nós", "você", "isso", "este",
    "esta", "sem", "sobre", "entre", "até", "quando", "porque", "ainda", "sempre", "nunca", "já", "bem", "aqui",
)  # fmt: skip

# The free-speech set: sentences written for this project outside the grammar and the lexicon sentences (everyday
# Brazilian Portuguese on other topics), spoken by the FREE_SPEAKERS. It measures whether a recogniser spells speech
# or only recognises the grammar's phrases.
FREE_SENTENCES = (
    "Choveu tanto que a rua virou um rio.",
    "Meu cachorro late sempre que o carteiro passa.",
    "Precisamos pagar a conta de luz até sexta-feira.",
    "O ônibus estava lotado e ninguém conseguia se mexer.",
    "Ela plantou girassóis no quintal da casa nova.",
    "Quanto custa uma passagem de trem para Campinas?",
    "O jogo terminou empatado depois de noventa minutos.",
    "Esqueci o guarda-chuva no táxi de novo.",
    "A fila do banco dobrava o quarteirão.",
    "Os alunos fizeram uma maquete do sistema solar.",
    "Vou tirar férias em julho e viajar para o litoral.",
    "O pedreiro levantou a parede em dois dias.",
    "Minha tia faz o melhor pão de queijo de Minas.",
    "A reunião foi adiada porque o diretor adoeceu.",
    "Ele tocou piano durante toda a cerimônia.",
    "As crianças brincavam de esconde-esconde no parque.",
    "O vento derrubou a antena da televisão.",
    "Nós assistimos ao filme inteiro sem piscar.",
    "A enfermeira mediu a pressão do paciente.",
    "Comprei três quilos de tomate na quitanda.",
    "O rio transbordou e alagou a plantação de milho.",
    "Você pode fechar a janela, por favor?",
    "O avião decolou com uma hora de atraso.",
    "Ganhei um livro de poesia no meu aniversário.",
    "A gata dormiu em cima do teclado.",
    "O time treinou debaixo de sol forte.",
    "Ela pintou o quarto de verde claro.",
    "O motorista buzinou para o ciclista distraído.",
    "Faltou água no prédio a semana inteira.",
    "Os pescadores voltaram com o barco cheio de peixes.",
    "Meu avô conta histórias da juventude dele.",
    "A prefeitura vai reformar a ponte velha.",
    "Tomei um banho gelado depois da corrida.",
    "A professora corrigiu as provas no fim de semana.",
    "Os pássaros cantam cedo na primavera.",
    "O elevador quebrou e subimos pela escada.",
    "Guardei as fotografias numa caixa de sapato.",
    "O sorveteiro passa na praia todas as tardes.",
    "Ela aprendeu a nadar aos quarenta anos.",
    "A padaria da esquina fecha ao meio-dia.",
    "O cientista explicou a pesquisa com paciência.",
    "Perdemos o trem por causa do trânsito.",
    "O menino desenhou um dragão enorme na parede.",
    "A vacina chegou ao posto de saúde ontem.",
    "Minha irmã trabalha como engenheira em Recife.",
    "Os vizinhos fizeram um churrasco no domingo.",
    "A lua cheia iluminou a estrada de terra.",
    "Ele consertou a torneira que pingava.",
    "O mercado fica aberto até as dez da noite.",
    "A banda tocou samba até de madrugada.",
    "Colhemos laranjas maduras no sítio do meu tio.",
    "O jornal publicou uma notícia surpreendente.",
    "Ela escreveu uma carta para a amiga distante.",
    "Os turistas tiraram fotos do Cristo Redentor.",
    "A tempestade derrubou várias árvores na avenida.",
    "O carteiro entregou um pacote pesado.",
    "Vamos plantar mudas de ipê na calçada.",
    "O doutor receitou repouso e muito líquido.",
    "A festa junina teve quadrilha e fogueira.",
    "O gato pulou o muro e sumiu no telhado.",
)  # fmt: skip


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def _make_sentence(rng: random.Random) -> str:
    """Draw one sentence from the template grammar."""
    choice = rng.choice

    def person_with_adjective() -> tuple[str, str]:
        text, gender = choice(PEOPLE)
        return text, choice(PEOPLE_ADJECTIVES)[gender == "f"]

    def thing_with_adjective() -> tuple[str, str]:
        text, gender, kind = choice(THINGS)
        return text, choice(THING_ADJECTIVES[kind])[gender == "f"]

    def past_time() -> str:
        return choice(PAST_TIMES + ANY_TIMES)

    def future_time() -> str:
        return choice(FUTURE_TIMES + ANY_TIMES)

    def place() -> str:
        return choice(LOCAL_PLACES + CITIES)

    cap = _capitalize
    subject, other = (p[0] for p in rng.sample(PEOPLE, 2))  # two different people
    noun, gender, kind = choice(THINGS)  # the object of a transitive verb, sometimes with an adjective
    obj = f"{noun} {choice(THING_ADJECTIVES[kind])[gender == 'f']}" if rng.random() < 0.4 else noun
    other_obj = choice([t[0] for t in THINGS if t[2] == kind and t[0] != noun])
    verb_past, verb_inf = choice([v[:2] for v in TRANSITIVE_VERBS if kind in v[2].split()])
    iverb_past, iverb_inf = choice(INTRANSITIVE_VERBS)
    thing, thing_adj = thing_with_adjective()
    person_adj = person_with_adjective()
    templates = (
        lambda: f"{cap(subject)} {verb_past} {obj} {choice(LOCAL_PLACES)}.",
        lambda: f"{cap(past_time())}, {subject} {verb_past} {obj} {place()}.",
        lambda: f"{cap(subject)} {iverb_past} {place()} {past_time()}.",
        lambda: f"{cap(subject)} vai {verb_inf} {obj} {future_time()}.",
        lambda: f"{cap(future_time())}, {subject} vai {iverb_inf} {place()}.",
        lambda: f"{cap(thing)} {thing_adj} está {choice(LOCAL_PLACES)}.",
        lambda: f"{cap(thing)} está muito {thing_adj}.",
        lambda: f"Você já {verb_past} {obj}?",
        lambda: f"Onde {subject} {verb_past} {obj}?",
        lambda: f"Por que {subject} {iverb_past} {past_time()}?",
        lambda: f"{cap(person_adj[0])} chegou {person_adj[1]} {place()}.",
        lambda: f"{cap(subject)} disse que {other} {iverb_past} {place()} {past_time()}.",
        lambda: f"{cap(subject)} {verb_past} {obj} e {other_obj}.",
        lambda: f"Não, {subject} não {verb_past} {obj} {past_time()}.",
        lambda: f"{cap(subject)} {iverb_past} {place()}, mas {other} {choice(INTRANSITIVE_VERBS)[0]}.",
        lambda: f"Quando você vai {verb_inf} {obj}?",
        lambda: f"Sim, {subject} vai {iverb_inf} {future_time()}.",
        lambda: f"{cap(subject)} estudou as lições {past_time()}.",
        lambda: f"{cap(subject)} {iverb_past} {past_time()}.",
        lambda: f"Onde está {thing}?",
        lambda: f"{cap(future_time())}, {subject} disse que {other} vai {verb_inf} {obj} {place()}.",
    )
    return choice(templates)()


def load_word_list(path: Path = WORD_LIST) -> list[str]:
    """Lower-case words of 2-12 letters from the Brazilian Portuguese word list, sorted (a deterministic order)."""
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the demo corpus draws its lexicon sentences from Debian's word list "
            "(apt-get install wbrazilian; setup.sh installs it)"
        )
    words = {w.strip() for w in path.read_text(encoding="utf-8").splitlines()}
    return sorted(w for w in words if 2 <= len(w) <= 12 and w.islower() and set(w) <= LEXICON_ALPHABET)


def generate_lexicon_sentences(count: int, words: list[str], seed: int = 0) -> list[str]:
    """Return ``count`` distinct word-list sentences: 4-10 words, about a third of them function words."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        length = rng.randint(4, 10)
        tokens = [rng.choice(FUNCTION_WORDS) if rng.random() < 0.35 else rng.choice(words) for _ in range(length)]
        seen.setdefault(_capitalize(" ".join(tokens)) + ".", None)
    return list(seen)


def generate_sentences(count: int, seed: int = 0) -> list[str]:
    """Return ``count`` distinct sentences (3-15 words each) in a deterministic order."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RuntimeError(f"the grammar could not produce {count} distinct sentences")
        sentence = _make_sentence(rng)
        if MIN_WORDS <= len(sentence.split()) <= MAX_WORDS:
            seen.setdefault(sentence, None)
    return list(seen)


def _synthesize(job: tuple[str, str, int, int, str]) -> int:
    """Speak ``text`` with espeak-ng and write 16 kHz mono 16-bit WAV to ``path``; returns the number of samples."""
    path, voice, speed, pitch, text = job
    espeak = subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-b", "1", "--stdout", text],
        check=True,
        capture_output=True,
    )
    sox = ["sox", "-D", "-t", "wav", "-", "-r", str(SAMPLING_RATE), "-c", "1", "-b", "16", "-e", "signed-integer"]
    subprocess.run([*sox, path], input=espeak.stdout, check=True, capture_output=True)
    with wave.open(path, "rb") as wav:
        return wav.getnframes()


def _synthesize_all(jobs: list[tuple[str, str, int, int, str]], num_workers: int) -> list[int]:
    """Run the synthesis jobs (in ``num_workers`` processes), with a progress bar; returns samples per clip, in order."""
    with tqdm(total=len(jobs), desc="synthesising", unit="clip", file=sys.stderr) as progress:
        num_samples = []
        with Pool(num_workers) if num_workers > 1 else nullcontext() as pool:
            for n in pool.imap(_synthesize, jobs, chunksize=8) if pool else map(_synthesize, jobs):
                num_samples.append(n)
                progress.update()
        return num_samples


def _write_metadata(
    split_dir: Path,
    rows: list[tuple[str, ...]],
    num_samples: list[int],
    header: tuple[str, ...] = ("file_name", "transcription", "speaker_id"),
) -> dict:
    """Write ``split_dir/metadata.csv`` (``header``: by default file_name, transcription, speaker_id; the speaker last)
    and return the split's statistics."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    (split_dir / "metadata.csv").write_text(buffer.getvalue(), encoding="utf-8")
    seconds = sum(num_samples) / SAMPLING_RATE
    return {
        "clips": len(rows),
        "seconds": round(seconds, 3),
        "hours": round(seconds / 3600, 4),
        "speakers": sorted({r[-1] for r in rows}),
    }


def build_free_speech_set(output_dir: str | Path, num_workers: int = 2) -> dict:
    """Speak FREE_SENTENCES with the FREE_SPEAKERS into ``output_dir/test`` (an audiofolder); returns its statistics.

    Skipped when an identical build is there. Every sentence is spoken by one voice, the voices taking turns.
    """
    output_dir = Path(output_dir)
    marker = output_dir / "build_info.json"
    identity = {"version": CORPUS_VERSION, "espeak_ng": _espeak_version(), "sentences": len(FREE_SENTENCES)}
    info = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    if {k: info.get(k) for k in identity} == identity:
        return {**info, "skipped": True}
    split_dir = output_dir / "test"
    if "sentences" not in info and not _holds_only_free_speech_clips(output_dir):  # (a demo corpus has no "sentences")
        raise FileExistsError(
            f"{output_dir} holds files that no free-speech build wrote: give an empty or new folder for the free-speech "
            "set (nothing there is deleted)."
        )
    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)
    rows, jobs = [], []
    for i, text in enumerate(FREE_SENTENCES):
        sid, voice, speed, pitch = FREE_SPEAKERS[i % len(FREE_SPEAKERS)]
        rows.append((f"free_{i:05d}_{sid}.wav", text, sid))
        jobs.append((str(split_dir / rows[-1][0]), voice, speed, pitch, text))
    info = {**identity, "test": _write_metadata(split_dir, rows, _synthesize_all(jobs, num_workers))}
    write_card(
        output_dir,
        DatasetCardData(language=["pt"], license="cc0-1.0", tags=[SYNTHETIC_TAG, "espeak-ng", "brazilian-portuguese"]),
        "# Free-speech test set (SYNTHETIC, espeak-ng)\n\n"
        f"{len(rows)} everyday Brazilian Portuguese sentences written for DistilXLSR-PT outside the demo corpus's "
        "grammar, spoken by espeak-ng `pt-br` voices heard nowhere in the demo corpus "
        f"({', '.join(v for _, v, _, _ in FREE_SPEAKERS)}). Made by `stand_ins/make_demo_corpus.py --free_speech_dir`; "
        "CC0-1.0.",
    )
    marker.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {**info, "skipped": False}


def build_unlabelled_set(
    output_dir: str | Path, corpus_dir: str | Path, num_clips: int = 3000, num_workers: int = 2, seed: int = 1
) -> dict:
    """Speak ``num_clips`` more sentences with all training voices into ``output_dir/train`` and write **no
    transcripts** (metadata.csv holds file_name and speaker_id): untranscribed audio for a self-supervised teacher.

    A third are word-list sentences, the rest from the grammar, drawn with their own ``seed``; every sentence of the
    corpus's validation and test splits (read from ``corpus_dir``) and of the free-speech set is left out, so no
    evaluation sentence is ever heard. Skipped when an identical build is there.
    """
    output_dir, corpus_dir = Path(output_dir), Path(corpus_dir)
    held_out = set(FREE_SENTENCES)
    for split in ("validation", "test"):
        with open(corpus_dir / split / "metadata.csv", encoding="utf-8", newline="") as file:
            held_out.update(row["transcription"] for row in csv.DictReader(file))
    marker = output_dir / "build_info.json"
    identity = {"version": CORPUS_VERSION, "espeak_ng": _espeak_version(), "clips": num_clips, "seed": seed}
    info = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else {}
    if {k: info.get(k) for k in identity} == identity:
        return {**info, "skipped": True}
    if output_dir.exists() and any(output_dir.iterdir()) and "clips" not in info:
        raise FileExistsError(f"{output_dir} holds files that no unlabelled build wrote: give an empty or new folder.")
    marker.unlink(missing_ok=True)
    split_dir = output_dir / "train"
    if split_dir.exists():
        shutil.rmtree(split_dir)
    split_dir.mkdir(parents=True)
    # Draw a few more than needed from each source: the held-out sentences are then removed.
    num_lexicon = round(num_clips / 3)
    spare = len(held_out)
    lexicon = generate_lexicon_sentences(num_lexicon + spare, load_word_list(), seed=seed + 100)
    grammar = generate_sentences(num_clips - num_lexicon + spare, seed=seed + 100)
    lexicon = [s for s in lexicon if s not in held_out][:num_lexicon]
    grammar = [s for s in grammar if s not in held_out][: num_clips - num_lexicon]
    sentences = lexicon + grammar
    random.Random(seed).shuffle(sentences)
    speaker_by_id = {s[0]: s for s in SPEAKERS}
    rows, jobs = [], []
    for i, text in enumerate(sentences):
        sid, voice, speed, pitch = speaker_by_id[TRAIN_SPEAKERS[i % len(TRAIN_SPEAKERS)]]
        rows.append((f"unlabelled_{i:05d}_{sid}.wav", sid))
        jobs.append((str(split_dir / rows[-1][0]), voice, speed, pitch, text))
    stats = _write_metadata(split_dir, rows, _synthesize_all(jobs, num_workers), header=("file_name", "speaker_id"))
    info = {**identity, "train": stats}
    write_card(
        output_dir,
        DatasetCardData(language=["pt"], license="cc0-1.0", tags=[SYNTHETIC_TAG, "espeak-ng", "brazilian-portuguese"]),
        "# Untranscribed audio of the demo corpus's voices (SYNTHETIC, espeak-ng)\n\n"
        f"{len(rows)} clips ({info['train']['hours']:.2f} h) of word-list and grammar sentences spoken by the "
        f"{len(TRAIN_SPEAKERS)} training voices of the demo corpus, with no transcripts: the audio a self-supervised "
        "stand-in teacher learns from. No sentence of the corpus's validation or test split, or of the free-speech "
        "set, is spoken. Made by `stand_ins/make_demo_corpus.py --unlabelled_dir`; CC0-1.0.",
    )
    marker.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return {**info, "skipped": False}


def _holds_only_free_speech_clips(output_dir: Path) -> bool:
    """Whether `output_dir` is missing, empty, or holds just what an interrupted free-speech build leaves: `test/`
    with its clips (`free_*.wav`) and metadata.csv."""
    if not output_dir.exists():
        return True
    if {path.name for path in output_dir.iterdir()} - {"test"}:
        return False
    clips = (output_dir / "test").iterdir() if (output_dir / "test").is_dir() else ()
    return all(
        path.name == "metadata.csv" or (path.name.startswith("free_") and path.suffix == ".wav") for path in clips
    )


def _espeak_version() -> str:
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    return out.split("Data at")[0].replace("eSpeak NG text-to-speech:", "").strip()  # e.g. "1.51"


def _write_dataset_card(output_dir: Path, info: dict) -> None:
    stats = info["splits"]
    data_files = [{"split": s, "path": f"{s}/*"} for s in SPLITS if stats[s]["clips"]]
    table = "\n".join(
        f"| {s} | {stats[s]['clips']} | {stats[s]['hours']:.3f} | {', '.join(stats[s]['speakers'])} |" for s in SPLITS
    )
    total = sum(stats[s]["clips"] for s in SPLITS)
    size_category = "n<1K" if total < 1000 else "1K<n<10K" if total < 10_000 else "10K<n<100K"
    used = {sid for s in SPLITS for sid in stats[s]["speakers"]}
    speakers = "\n".join(
        f"| {sid} | `{voice}` | {speed} | {pitch} |" for sid, voice, speed, pitch in SPEAKERS if sid in used
    )
    data = DatasetCardData(
        language=["pt"],
        license="cc0-1.0",
        pretty_name="DistilXLSR-PT synthetic Brazilian Portuguese demo corpus",
        task_categories=["automatic-speech-recognition"],
        tags=[SYNTHETIC_TAG, "espeak-ng", "brazilian-portuguese"],
        size_categories=[size_category],
        configs=[{"config_name": "default", "data_files": data_files}],
        dataset_info={
            "features": [
                {"name": "audio", "dtype": {"audio": {"sampling_rate": SAMPLING_RATE}}},
                {"name": "transcription", "dtype": "string"},
                {"name": "speaker_id", "dtype": "string"},
            ]
        },
    )
    body = f"""# DistilXLSR-PT synthetic Brazilian Portuguese demo corpus

**This corpus is SYNTHETIC.** Every clip was produced by the espeak-ng text-to-speech engine
(espeak-ng {info["espeak_ng"]}, voice `pt-br`). It is a small, offline stand-in for real Brazilian Portuguese
corpora (Common Voice, CORAA, MLS, ...) so that the DistilXLSR-PT fine-tuning and evaluation pipeline can be run
and tested end to end without downloads. Word error rates measured on it say nothing about performance on real speech.

## Contents

| split | clips | hours | speakers |
|---|---|---|---|
{table}

Audio: 16 kHz, mono, 16-bit PCM WAV. Layout: Hugging Face `audiofolder` (`<split>/metadata.csv` with columns
`file_name`, `transcription`, `speaker_id`). Load with:

```python
from datasets import load_dataset
ds = load_dataset("audiofolder", data_dir="path/to/this/folder")
```

- The test speakers ({", ".join(TEST_SPEAKERS)}) are held out: they never occur in train or validation.
- Validation uses the training speakers; no validation or test sentence occurs in train.
- Transcriptions keep case and punctuation (commas, final `.` or `?`); normalise them before computing WER.
- Vocabulary: {info["word_types"]} word types (lower-cased, punctuation removed), characters (besides space):
  `{info["charset"].replace(" ", "")}`.

## Speakers

A "speaker" is an espeak-ng voice variant with a fixed speed (words per minute) and pitch (0-99).

| speaker | voice | speed | pitch |
|---|---|---|---|
{speakers}

## Source and licence

The sentences were generated by the template grammar in `distilxlsr_pt/demo_corpus.py` of the DistilXLSR-PT project
(subjects, verbs, objects, places and times written by the project; seed {info["params"]["seed"]}), and are
released, like the audio, under CC0-1.0. A share of the train and validation sentences
({info["lexicon_sentences"]["train"]} and {info["lexicon_sentences"]["validation"]}) are instead random sequences of
words from Debian's `wbrazilian` word list between frequent function words: ungrammatical, there to teach spelling
beyond the grammar's closed vocabulary. espeak-ng (GPL-3.0) was used as a tool; its output is not covered by its
licence.

Rebuild it, byte for byte with the same espeak-ng and sox versions, with:

```bash
python stand_ins/make_demo_corpus.py --output_dir DIR --num_train {info["params"]["num_train"]} \\
    --num_validation {info["params"]["num_validation"]} --num_test {info["params"]["num_test"]} \\
    --seed {info["params"]["seed"]} --lexicon_fraction {info["params"]["lexicon_fraction"]}
```
"""
    write_card(output_dir, data, body)


def build_corpus(
    output_dir: str | Path,
    num_train: int = 1500,
    num_validation: int = 150,
    num_test: int = 150,
    num_workers: int = 2,
    seed: int = 0,
    overwrite: bool = False,
    lexicon_fraction: float = 1 / 3,
    num_train_voices: int | None = None,
) -> dict:
    """Build the corpus into ``output_dir`` (skipped if an identical build is already there) and return its info.

    ``lexicon_fraction`` of the train and validation sentences are word-list sentences; the rest, and all of the test
    split, come from the grammar. ``num_train_voices`` keeps only the first N training speakers (the same sentences;
    9 gives corpus version 2's nine voices, which the shipped teacher's first training stage used).

    The returned dict (also written to ``output_dir/build_info.json``) holds the build parameters and, per split,
    the number of clips, seconds, hours and speakers.
    """
    output_dir = Path(output_dir)
    params = {
        "num_train": num_train,
        "num_validation": num_validation,
        "num_test": num_test,
        "seed": seed,
        "lexicon_fraction": round(lexicon_fraction, 4),
    }
    train_speakers = TRAIN_SPEAKERS
    if num_train_voices is not None:
        if not 1 <= num_train_voices <= len(TRAIN_SPEAKERS):
            raise ValueError(f"num_train_voices must be 1..{len(TRAIN_SPEAKERS)}, got {num_train_voices}")
        train_speakers = TRAIN_SPEAKERS[:num_train_voices]
        params["num_train_voices"] = num_train_voices
    marker = output_dir / "build_info.json"
    espeak_version = _espeak_version()
    if marker.exists() and not overwrite:
        info = json.loads(marker.read_text(encoding="utf-8"))
        if (info.get("params"), info.get("version"), info.get("espeak_ng")) == (
            params,
            CORPUS_VERSION,
            espeak_version,
        ):
            info["skipped"] = True
            return info
    elif output_dir.exists() and any(output_dir.iterdir()) and not marker.exists() and not overwrite:
        raise FileExistsError(
            f"{output_dir} is not empty and holds no complete corpus built by this script "
            "(an interrupted build?); use --overwrite"
        )

    # Remove what a previous (or interrupted) build left behind; leave anything else in output_dir alone.
    marker.unlink(missing_ok=True)
    for name in (*SPLITS, "README.md"):
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()

    lexicon_sizes = {
        "train": round(num_train * lexicon_fraction),
        "validation": round(num_validation * lexicon_fraction),
    }
    num_grammar = num_train + num_validation + num_test - sum(lexicon_sizes.values())
    grammar = generate_sentences(num_grammar, seed=seed)
    random.Random(seed + 1).shuffle(grammar)
    lexicon = generate_lexicon_sentences(sum(lexicon_sizes.values()), load_word_list(), seed=seed)
    # Split by sentence: the sentences are distinct, so no test or validation sentence occurs in train.
    num_grammar_validation = num_validation - lexicon_sizes["validation"]
    by_split = {
        "test": grammar[:num_test],
        "validation": grammar[num_test : num_test + num_grammar_validation] + lexicon[lexicon_sizes["train"] :],
        "train": grammar[num_test + num_grammar_validation :] + lexicon[: lexicon_sizes["train"]],
    }
    for split in ("train", "validation"):  # mix the two kinds, so that any first N clips hold both
        random.Random(seed + 2).shuffle(by_split[split])
    sentences = [s for split in SPLITS for s in by_split[split]]
    speaker_by_id = {s[0]: s for s in SPEAKERS}

    rows: dict[str, list[tuple[str, str, str]]] = {}
    jobs = []
    for split in SPLITS:
        (output_dir / split).mkdir(parents=True, exist_ok=True)
        speakers = TEST_SPEAKERS if split == "test" else train_speakers
        rows[split] = []
        for i, text in enumerate(by_split[split]):
            sid, voice, speed, pitch = speaker_by_id[speakers[i % len(speakers)]]
            file_name = f"{split}_{i:05d}_{sid}.wav"
            rows[split].append((file_name, text, sid))
            jobs.append((str(output_dir / split / file_name), voice, speed, pitch, text))

    num_samples = _synthesize_all(jobs, num_workers)
    stats = {}
    offset = 0
    for split in SPLITS:
        stats[split] = _write_metadata(output_dir / split, rows[split], num_samples[offset : offset + len(rows[split])])
        offset += len(rows[split])

    words = sorted({w.strip(",.?").lower() for s in sentences for w in s.split()})
    info = {
        "lexicon_sentences": lexicon_sizes,
        "version": CORPUS_VERSION,
        "espeak_ng": espeak_version,
        "params": params,
        "splits": stats,
        "word_types": len(words),
        "charset": "".join(sorted(set("".join(sentences)))),
    }
    _write_dataset_card(output_dir, info)
    marker.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")  # written last
    info["skipped"] = False
    return info
